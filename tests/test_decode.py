"""Tests for tempo_fast.video.decode (and the clips it is tested on).

References are independent of the code under test: clips are made by ffmpeg with known frame
times (frame k at k/fps; the VFR clip's times from its construction), frame content is checked
against PyAV's own decoder, and each bad input is a file built to have one specific problem.
"""
import importlib
import math
import re
import warnings

import pytest
import torch

from tempo_fast.video import clips
from tempo_fast.video.decode import VideoError, decode, probe

dec = importlib.import_module("tempo_fast.video.decode")  # the module: the package's `decode` is the function

FPS, SECONDS, W, H = 8, 4, 64, 48
CODECS = [("h264", "mp4"), ("hevc", "mp4"), ("vp9", "webm")]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    out = {c: clips.make_clip(root / f"cfr_{c}.{ext}", width=W, height=H, fps=FPS,
                              seconds=SECONDS, codec=c) for c, ext in CODECS}
    out["vfr.mkv"] = clips.make_vfr_clip(root / "vfr.mkv", fps=FPS, seconds=SECONDS)
    out["vfr.mp4"] = clips.make_vfr_clip(root / "vfr.mp4", fps=FPS, seconds=SECONDS)
    out["still"] = clips.make_still_then_busy(root / "still.mp4", 1, 1, fps=FPS)
    out["root"] = root
    return out


def pyav_frames(path):
    """All frames as uint8 [T, C, H, W] and their pts, decoded by PyAV (an independent decoder)."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.pts * stream.time_base), torch.from_numpy(f.to_ndarray(format="rgb24")))
                  for f in container.decode(stream)]
    frames.sort(key=lambda item: item[0])
    return (torch.stack([f for _, f in frames]).permute(0, 3, 1, 2),
            torch.tensor([t for t, _ in frames], dtype=torch.float64))


def mean_abs(a, b):
    return (a.float() - b.float()).abs().mean().item()


@pytest.mark.parametrize("codec", [c for c, _ in CODECS])
def test_all_frames_pts_and_content(media, codec):
    frames = decode(media[codec])
    assert frames.data.dtype == torch.uint8 and frames.data.shape == (FPS * SECONDS, 3, H, W)
    expected = torch.arange(FPS * SECONDS, dtype=torch.float64) / FPS
    torch.testing.assert_close(frames.pts, expected, atol=1e-6, rtol=0)
    assert frames.duration == pytest.approx(SECONDS) and frames.fps == pytest.approx(FPS)
    ref, ref_pts = pyav_frames(media[codec])
    torch.testing.assert_close(ref_pts, expected, atol=1e-6, rtol=0)
    assert mean_abs(frames.data, ref) < 2.0
    assert str(media[codec]) == frames.path


@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_timestamps_round_trip(media, codec, seek_mode):
    full = decode(media[codec])
    times = [0.0, 0.125, 0.2, 1.0 - 1e-4, 3.33, 0.6, 0.6, 3.875, 3.999]
    frames = decode(media[codec], timestamps=times, seek_mode=seek_mode)
    index = [math.floor(t * FPS + 1e-9) for t in times]
    torch.testing.assert_close(frames.pts, torch.tensor(index, dtype=torch.float64) / FPS,
                               atol=1e-6, rtol=0)
    assert torch.equal(frames.data, full.data[index])


@pytest.mark.parametrize("rate", [3, 8, 0.7, 20])
def test_rate_sampling(media, rate):
    full = decode(media["h264"])
    frames = decode(media["h264"], fps=rate)
    times = [k / rate for k in range(100) if k / rate < SECONDS]
    index = [math.floor(t * FPS + 1e-9) for t in times]
    torch.testing.assert_close(frames.pts, torch.tensor(index, dtype=torch.float64) / FPS,
                               atol=1e-6, rtol=0)
    assert torch.equal(frames.data, full.data[index])


def test_size_matches_an_antialiased_resize(media):
    size = (27, 37)
    small = decode(media["h264"], size=size)
    assert small.data.shape == (FPS * SECONDS, 3, *size)
    full, _ = pyav_frames(media["h264"])
    ref = torch.nn.functional.interpolate(full.double(), size=size, mode="bilinear",
                                          antialias=True).round().clamp(0, 255)
    assert mean_abs(small.data, ref) < 3.0


@pytest.mark.parametrize("shape,size", [((3, 3, 48, 64), (24, 40)), ((1, 3, 7, 9), (13, 5)),
                                        ((2, 1, 5, 5), (5, 5))])
def test_resize_frames_against_float64(shape, size):
    data = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.interpolate(data.double(), size=size, mode="bilinear",
                                          antialias=True).round().clamp(0, 255)
    out = dec.resize_frames(data, size)
    assert out.dtype == torch.uint8 and out.shape == (*shape[:2], *size)
    assert (out.double() - ref).abs().max() <= 1


@pytest.mark.filterwarnings("ignore:.*approximate seeking failed")
@pytest.mark.parametrize("name", ["vfr.mkv", "vfr.mp4"])
def test_variable_frame_rate_pts(media, name):
    expected = torch.tensor(clips.vfr_frame_times(fps=FPS, seconds=SECONDS), dtype=torch.float64)
    _, ref_pts = pyav_frames(media[name])
    torch.testing.assert_close(ref_pts, expected, atol=1e-6, rtol=0)
    frames = decode(media[name])
    torch.testing.assert_close(frames.pts, expected, atol=1e-6, rtol=0)
    at = decode(media[name], timestamps=[0.3, 2.3, 2.5, 3.1, 3.6])
    torch.testing.assert_close(at.pts, torch.tensor([0.25, 2.0, 2.5, 3.0, 3.5], dtype=torch.float64))
    rate = decode(media[name], fps=2, seek_mode="approximate")
    torch.testing.assert_close(rate.pts, torch.arange(8, dtype=torch.float64) / 2)


def test_dali_frame_index_helpers(media):
    info, pts = dec.frame_times(str(media["vfr.mkv"]))
    assert pts == pytest.approx(clips.vfr_frame_times(fps=FPS, seconds=SECONDS))
    assert (info.width, info.height, info.codec) == (W, H, "h264")
    assert dec.frame_index(pts, [0.0, 0.3, 2.49, 2.5, 9.0]) == [0, 2, 16, 17, 19]


def test_still_then_busy_clip(media):
    frames = decode(media["still"])
    diffs = (frames.data[1:].float() - frames.data[:-1].float()).abs().mean(dim=(1, 2, 3))
    assert diffs[: FPS - 1].max() < 0.05 and diffs[FPS:].min() > 0.1


def test_probe(media):
    info = probe(media["h264"])
    assert (info.duration, info.fps, info.num_frames) == (SECONDS, FPS, FPS * SECONDS)
    assert (info.width, info.height, info.codec, info.start) == (W, H, "h264", 0.0)
    exact = probe(media["vfr.mkv"], exact=True)
    assert exact.num_frames == len(clips.vfr_frame_times(fps=FPS, seconds=SECONDS))
    assert probe(media["hevc"]).codec == "hevc" and probe(media["vp9"]).codec == "vp9"


def test_out_of_range_timestamps_are_clamped_with_a_warning(media):
    with pytest.warns(UserWarning, match=r"cfr_h264\.mp4: 2 of 4 timestamps outside"):
        frames = decode(media["h264"], timestamps=[-1.0, 0.5, 4.0, 7.5])
    torch.testing.assert_close(frames.pts, torch.tensor([0.0, 0.5, 3.875, 3.875], dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode(media["h264"], timestamps=[0.0, 4.0])  # the end itself is inside [0, duration]


def _bad(root, name, kind, media):
    path = root / name
    data = media["h264"].read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a video\n" * 20)
    elif kind == "long_text":  # FFmpeg's tty demuxer renders this as a 5-frame 640x400 "video"
        path.write_text("not a video\n" * 100)
    elif kind == "png":
        clips._run(["-f", "lavfi", "-i", "testsrc2=s=32x24", "-frames:v", "1"], path)
    elif kind == "half":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "half_faststart":
        full = clips.make_clip(root / "fs_full.mp4", extra=["-movflags", "+faststart"])
        blob = full.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    elif kind == "noise":
        blob = bytearray(data)
        gen = torch.Generator().manual_seed(1)
        lo, hi = len(blob) // 3, 2 * len(blob) // 3
        blob[lo:hi] = bytes(torch.randint(0, 256, (hi - lo,), generator=gen, dtype=torch.uint8).tolist())
        path.write_bytes(bytes(blob))
    elif kind == "audio":
        clips.make_audio_only(path)
    elif kind == "zero_frames":
        clips.make_empty_video(path)
    return path


BAD = [("empty.mp4", "empty", "empty file"), ("notes.mp4", "text", "not a readable"),
       ("notes.txt", "long_text", "is a text file"),
       ("still.png", "png", "PNG image"), ("half.mp4", "half", "not a readable"),
       ("half_fs.mp4", "half_faststart", "truncated"), ("noise.mp4", "noise", "corrupt"),
       ("tone.m4a", "audio", "no video stream"), ("nothing.avi", "zero_frames", "no frames")]


@pytest.mark.parametrize("name,kind,words", BAD)
def test_bad_input_raises_video_error_naming_the_file(media, name, kind, words):
    path = _bad(media["root"], name, kind, media)
    with pytest.raises(VideoError, match=re.escape(name)) as info:
        decode(path)
    assert words in str(info.value)
    if kind != "noise":  # damage inside the data shows only when frames are decoded
        with pytest.raises(VideoError, match=re.escape(name)):
            probe(path, exact=True)
    if kind == "long_text":  # the DALI path reads frame times with PyAV: the same refusal
        pytest.importorskip("av")
        with pytest.raises(VideoError, match=re.escape(name) + ".*is a text file"):
            dec.frame_times(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        decode(tmp_path / "missing.mp4")


@pytest.mark.parametrize("kwargs,match", [
    (dict(fps=0), "fps must be"), (dict(fps=2, timestamps=[1.0]), "not both"),
    (dict(size=(0, 4)), "size must be"), (dict(size=(2.5, 4)), "size must be"),
    (dict(seek_mode="fast"), "seek_mode"), (dict(backend="ffmpeg"), "backend must be"),
    (dict(timestamps=[float("nan")]), "finite"), (dict(backend="dali"), "CUDA device only"),
])
def test_argument_errors(media, kwargs, match):
    with pytest.raises(ValueError, match=match):
        decode(media["h264"], **kwargs)


def test_fallback_past_a_missing_backend_warns_and_decodes(media, monkeypatch):
    pytest.importorskip("av")
    try:
        import nvidia.dali  # noqa: F401
        pytest.skip("nvidia-dali is installed: this test needs it absent")
    except ImportError:
        pass
    cpu = torch.device("cpu")
    monkeypatch.setattr(dec, "_candidates", lambda backend, device: [
        ("dali", torch.device("cuda")), ("torchcodec", cpu)])
    with pytest.warns(UserWarning, match=r"torchcodec:cpu after: dali on cuda: .*not installed"):
        frames = decode(media["h264"], timestamps=[1.0])
    assert frames.backend == "torchcodec:cpu"
    torch.testing.assert_close(frames.pts, torch.tensor([1.0], dtype=torch.float64))


def test_dali_refuses_clearly_when_absent_or_codec_unsupported(media):
    from tempo_fast.video import dali
    with pytest.raises(dec.BackendUnavailable, match="prores"):
        dali.decode_indices(str(media["h264"]), [0], device=torch.device("cuda"), codec="prores")
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        with pytest.raises(dec.BackendUnavailable, match="nvidia-dali"):
            dali.decode_indices(str(media["h264"]), [0], device=torch.device("cuda"), codec="h264")


def test_all_backends_failing_names_each(media, monkeypatch):
    def unavailable(*args):
        raise dec.BackendUnavailable("simulated: no decoder")
    monkeypatch.setattr(dec, "_decode_torchcodec", unavailable)
    with pytest.raises(VideoError, match=r"cfr_h264\.mp4: no backend could decode it: "
                                         r"torchcodec on cpu: simulated"):
        decode(media["h264"])


@pytest.mark.gpu
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_cuda_decode_matches_cpu(media, codec):
    cpu = decode(media[codec], timestamps=[0.0, 1.3, 3.9])
    gpu = decode(media[codec], timestamps=[0.0, 1.3, 3.9], device="cuda", size=(24, 32))
    assert gpu.data.is_cuda and gpu.data.shape == (3, 3, 24, 32)
    torch.testing.assert_close(gpu.pts, cpu.pts)
    full = decode(media[codec], device="cuda")
    assert full.data.is_cuda and full.data.shape == (FPS * SECONDS, 3, H, W)
    assert mean_abs(full.data.cpu(), decode(media[codec]).data) < 3.0


@pytest.mark.gpu
def test_dali_decode_matches_torchcodec(media):
    pytest.importorskip("nvidia.dali")
    ref = decode(media["h264"], timestamps=[0.0, 1.3, 3.9])
    out = decode(media["h264"], timestamps=[0.0, 1.3, 3.9], device="cuda", backend="dali")
    torch.testing.assert_close(out.pts, ref.pts)
    assert out.data.is_cuda and mean_abs(out.data.cpu(), ref.data) < 3.0
