"""Decode a video file into uint8 frames on a device, with the presentation time of every frame.

`decode(path)` returns `Frames`: `data` uint8 `[T, C, H, W]` on `device` (RGB; for torchcodec the
memory is channels-last, a permuted view of the decoder's NHWC output), `pts` float64 `[T]`
seconds on the CPU, the stream's `duration` and average `fps`. It returns

- every frame (default);
- the frames shown at `timestamps` (the frame whose display interval holds each time);
- frames at a rate `fps`: the frames shown at times k/fps, k = 0, 1, ..., before the stream end.

Variable-frame-rate files are handled through pts: times always map to the frame on screen.

Backends (`backend=None` tries them in this order, warning at each fall back):
- "torchcodec" on the device: CPU decoding, or NVDEC when `device` is CUDA and torchcodec is a
  CUDA build (frames never pass through host memory);
- "dali" (`tempo_fast.video.dali`, optional GPU extra nvidia-dali) when `device` is CUDA;
- on CUDA, last: torchcodec on the CPU, then one host-to-device copy.
An explicit backend never falls back; it fails naming itself and the reason.

`size=(H, W)` resizes (bilinear, antialiased): inside the decoder on the CPU (torchcodec's
`transforms=[Resize]`, fused with the colour conversion, so full-size frames are never
materialised), and after decoding on the device otherwise (`resize_frames`).

`seek_mode="exact"` scans the file's packets once (no decoding) so every time maps to the right
frame; "approximate" trusts the header (faster to open, wrong on variable-frame-rate files). If an
approximate decode fails, it is retried once in exact mode with a warning; for whole-video decodes
of files whose header has no frame count (Matroska/WebM), exact mode is used.

Bad input raises `VideoError` (a ValueError) naming the file and the problem: empty file, an
image, a text file (FFmpeg's tty demuxer would render it as ANSI art) or other non-video file,
truncated or corrupt data, no video stream, zero frames. A missing file raises
FileNotFoundError. Timestamps outside the stream are clamped to it, with a warning
giving the file, the count and the range. torchcodec 0.13 was fuzzed with 2,700 corrupted files
(truncation, random and zeroed byte runs, bit flips; H.264, HEVC, VP9, MPEG-4; mp4/mkv/webm):
every one decoded or raised a Python exception within 50 ms, none crashed or hung, so decoding
runs in-process with no ffprobe pre-check on the happy path.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass

import torch

BACKENDS = ("torchcodec", "dali")
SEEK_MODES = ("exact", "approximate")
# Leading bytes of image formats that FFmpeg would otherwise open as a one-frame "video".
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF",
                b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
# FFmpeg's text renderers: its tty demuxer opens any text file as an "ansi" video (ANSI art), the
# bintext demuxers render .bin/.xb/.idf text art; none of these is a video.
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


class VideoError(ValueError):
    """A file that cannot be decoded as a video; the message names the file and the problem."""


class BackendUnavailable(VideoError):
    """A decoding backend cannot run here (not installed, no CUDA build, unsupported codec)."""


@dataclass
class Frames:
    data: torch.Tensor   # uint8 [T, C, H, W] RGB frames on the requested device
    pts: torch.Tensor    # float64 [T] presentation time (s) of each returned frame, on the CPU
    duration: float      # stream duration in seconds
    fps: float           # average frame rate of the stream
    path: str            # the decoded file
    backend: str = ""    # what decoded it: "torchcodec:cpu", "torchcodec:cuda", "dali:cuda"


@dataclass(frozen=True)
class VideoInfo:
    path: str            # the probed file
    duration: float      # stream duration in seconds
    fps: float           # average frame rate
    num_frames: int      # frame count (header, or duration x fps where the header has none)
    width: int           # frame width in pixels
    height: int          # frame height in pixels
    codec: str           # FFmpeg codec name, e.g. "h264", "hevc", "vp9"
    start: float = 0.0   # presentation time of the first frame


def check_file(path) -> str:
    """Validate `path` before any decoder sees it; returns it as a string."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"video file not found: {path}")
    if not os.path.isfile(path):
        raise VideoError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, kind in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            raise VideoError(f"{path}: is a {kind} image, not a video")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise VideoError(f"{path}: is a WebP image, not a video")
    return path


def reject_text(path: str, codec) -> None:
    """Raise VideoError when FFmpeg opened `path` as rendered text rather than a video stream."""
    if str(codec).lower() in _TEXT_CODECS:
        raise VideoError(f"{path}: is a text file, not a video (FFmpeg would render its text as "
                         f"{codec!s} art)")


def diagnose(path: str, error: BaseException) -> VideoError:
    """A VideoError saying what is wrong with `path`, after a decoder raised `error`.

    Runs only on failure: it opens the file with PyAV (when installed) to tell a file with no
    video stream, or with zero frames, from an unreadable or corrupt one.
    """
    text = str(error).strip()
    reason = re.sub(r"^.*?\.cpp:\d+,\s*", "", text.splitlines()[-1])[-300:] if text \
        else type(error).__name__
    try:
        import av
    except ImportError:
        return VideoError(f"{path}: not a decodable video (truncated, corrupt, not a video, or "
                          f"no video stream): {reason}")
    try:
        container = av.open(path)
    except Exception:  # PyAV cannot open it either: the decoder's reason says why
        return VideoError(f"{path}: not a readable video container (truncated, corrupt or not a "
                          f"video): {reason}")
    with container:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            return VideoError(f"{path}: has no video stream (streams found: {kinds})")
        try:
            first = next(iter(container.decode(video=0)), None)
        except Exception:  # the first frames are damaged
            first = True
        if first is None:
            return VideoError(f"{path}: video stream has no frames (zero frames, or cut off "
                              f"before the first)")
    return VideoError(f"{path}: corrupt or truncated video data: {reason}")


def probe(path, *, exact: bool = False) -> VideoInfo:
    """Stream metadata without decoding frames: header only, or a packet scan when `exact`."""
    path = check_file(path)
    decoder = _open(path, "exact" if exact else "approximate", "cpu", None, 1)
    return _info(path, decoder.metadata)


def decode(path, *, timestamps=None, fps: float | None = None, device="cpu",
           backend: str | None = None, size: tuple[int, int] | None = None,
           seek_mode: str = "exact", num_threads: int = 1) -> Frames:
    """Decode `path` into `Frames` on `device` (see the module docstring).

    timestamps: seconds (sequence, array or tensor): the frames shown at these times.
    fps: the frames shown at k/fps, k >= 0, before the end of the stream.
    size: (H, W) output size. num_threads: FFmpeg threads for CPU decoding (0: FFmpeg decides).
    """
    path = check_file(path)
    device = torch.device(device)
    if timestamps is not None and fps is not None:
        raise ValueError(f"give timestamps or fps, not both (got fps={fps})")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if seek_mode not in SEEK_MODES:
        raise ValueError(f"seek_mode must be one of {SEEK_MODES}, got {seek_mode!r}")
    if size is not None:
        size = _check_size(size)
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    times = None if timestamps is None else _as_times(timestamps, path)

    failures = []
    for name, where in _candidates(backend, device):
        try:
            run = _decode_dali if name == "dali" else _decode_torchcodec
            frames = run(path, times, fps, where, size, seek_mode, num_threads)
        except BackendUnavailable as err:
            if backend is not None:
                raise
            failures.append(f"{name} on {where}: {err}")
            continue
        if failures:
            warnings.warn(f"{path}: decoded with {frames.backend} after: " + "; ".join(failures),
                          stacklevel=2)
        frames.data = frames.data.to(device)
        return frames
    raise VideoError(f"{path}: no backend could decode it: " + "; ".join(failures))


def _candidates(backend: str | None, device: torch.device) -> list[tuple[str, torch.device]]:
    if backend == "torchcodec":
        return [("torchcodec", device)]
    if backend == "dali":
        if device.type != "cuda":
            raise ValueError(f"backend='dali' decodes on a CUDA device only, got device {device}")
        return [("dali", device)]
    if device.type == "cuda":
        return [("torchcodec", device), ("dali", device), ("torchcodec", torch.device("cpu"))]
    return [("torchcodec", device)]


def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (H, W) of positive ints, got {size!r}") from None
    if height <= 0 or width <= 0 or (height, width) != tuple(size):
        raise ValueError(f"size must be a pair (H, W) of positive ints, got {size!r}")
    return height, width


def _as_times(timestamps, path: str) -> list[float]:
    times = torch.as_tensor(timestamps, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(times).all():
        raise ValueError(f"{path}: timestamps must be finite, got {times.tolist()}")
    return times.tolist()


def clamp_times(times: list[float], start: float, end: float, path: str, *,
                stacklevel: int = 2) -> list[float]:
    """Clamp `times` into the stream [start, end) so each names a frame; warn if any moved."""
    outside = [t for t in times if t < start - 1e-9 or t > end + 1e-9]
    if outside:
        warnings.warn(f"{path}: {len(outside)} of {len(times)} timestamps outside the stream "
                      f"[{start:.3f}, {end:.3f}] s (from {min(outside):.3f} to {max(outside):.3f}) "
                      f"were clamped to it", stacklevel=stacklevel)
    last = math.nextafter(end, -math.inf) if end > start else start
    return [min(max(t, start), last) for t in times]


def rate_times(fps: float, start: float, end: float) -> list[float]:
    """k/fps for k >= 0 before `end`, those before `start` moved to `start`."""
    count = max(1, math.ceil(end * fps - 1e-9))
    return [max(k / fps, start) for k in range(count)]


def resize_frames(data: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 `[T, C, H, W]` frames on their own device."""
    if tuple(data.shape[-2:]) == tuple(size):
        return data
    out = torch.nn.functional.interpolate(data.float(), size=size, mode="bilinear",
                                          align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _info(path: str, meta) -> VideoInfo:
    start = meta.begin_stream_seconds or 0.0
    duration = meta.duration_seconds or 0.0
    fps = meta.average_fps or 0.0
    num_frames = meta.num_frames if meta.num_frames is not None else round(duration * fps)
    return VideoInfo(path=path, duration=float(duration), fps=float(fps), num_frames=int(num_frames),
                     width=int(meta.width or 0), height=int(meta.height or 0),
                     codec=str(meta.codec), start=float(start))


def _open(path: str, seek_mode: str, device, transforms, num_threads: int):
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as err:
        raise BackendUnavailable(f"torchcodec is not installed (pip install 'tempo_fast[video]'): "
                                 f"{err}") from err
    try:
        decoder = VideoDecoder(path, seek_mode=seek_mode, device=str(device),
                               num_ffmpeg_threads=num_threads, transforms=transforms)
    except Exception as err:  # torchcodec raises RuntimeError/ValueError/JSONDecodeError
        if torch.device(device).type == "cuda" and _opens_on_cpu(path):
            raise BackendUnavailable(f"torchcodec cannot decode on {device} here: {err}") from err
        raise diagnose(path, err) from err
    meta = decoder.metadata
    reject_text(path, meta.codec)
    if not meta.num_frames:
        raise diagnose(path, VideoError("the stream reports zero frames"))
    header, content = meta.num_frames_from_header, meta.num_frames_from_content
    # One frame of slack: torchcodec's scan drops a last sample of zero duration (some muxers
    # write one); a cut file loses far more.
    if header is not None and content is not None and content < header - 1:
        raise VideoError(f"{path}: truncated: the header declares {header} frames but only "
                         f"{content} are in the file")
    return decoder


def _opens_on_cpu(path: str) -> bool:
    from torchcodec.decoders import VideoDecoder
    try:
        VideoDecoder(path, seek_mode="approximate")
    except Exception:  # the file itself is bad: the caller reports the original error
        return False
    return True


def _decode_torchcodec(path, times, fps, device, size, seek_mode, num_threads) -> Frames:
    transforms = None
    if size is not None and device.type == "cpu":
        from torchcodec.transforms import Resize
        transforms = [Resize(size)]
    try:
        return _torchcodec_frames(path, times, fps, device, transforms, seek_mode, num_threads, size)
    except BackendUnavailable:
        raise
    except VideoError:
        if seek_mode == "exact":
            raise
    warnings.warn(f"{path}: approximate seeking failed; decoding again with seek_mode='exact'",
                  stacklevel=3)
    return _torchcodec_frames(path, times, fps, device, transforms, "exact", num_threads, size)


def _torchcodec_frames(path, times, fps, device, transforms, seek_mode, num_threads, size):
    decoder = _open(path, seek_mode, device, transforms, num_threads)
    if times is None and fps is None and seek_mode == "approximate" \
            and decoder.metadata.num_frames_from_header is None:
        decoder = _open(path, "exact", device, transforms, num_threads)
    meta = decoder.metadata
    start, end = meta.begin_stream_seconds or 0.0, meta.end_stream_seconds
    try:
        if times is None and fps is None:
            batch = decoder.get_frames_in_range(0, len(decoder))
        else:
            wanted = rate_times(fps, start, end) if fps is not None \
                else clamp_times(times, start, end, path, stacklevel=5)
            batch = decoder.get_frames_played_at(wanted)
    except Exception as err:  # corrupt data surfaces only when packets are decoded
        raise diagnose(path, err) from err
    if device.type == "cuda" and getattr(decoder, "cpu_fallback", False):
        warnings.warn(f"{path}: NVDEC could not decode it; torchcodec decoded on the CPU "
                      f"({decoder.cpu_fallback})", stacklevel=4)
    data = batch.data if size is None else resize_frames(batch.data, size)
    return Frames(data=data, pts=batch.pts_seconds.to("cpu", torch.float64),
                  duration=float(meta.duration_seconds), fps=float(meta.average_fps), path=path,
                  backend=f"torchcodec:{device.type}")


def _decode_dali(path, times, fps, device, size, seek_mode, num_threads) -> Frames:
    from tempo_fast.video import dali
    info, pts = frame_times(path)
    if times is None and fps is None:
        index = list(range(len(pts)))
    else:
        end = pts[-1] + (1.0 / info.fps if info.fps > 0 else 0.0)
        wanted = rate_times(fps, pts[0], end) if fps is not None \
            else clamp_times(times, pts[0], end, path, stacklevel=4)
        index = frame_index(pts, wanted)
    data = dali.decode_indices(path, index, device=device, codec=info.codec)
    if size is not None:
        data = resize_frames(data, size)
    return Frames(data=data, pts=torch.tensor([pts[i] for i in index], dtype=torch.float64),
                  duration=info.duration, fps=info.fps, path=path, backend=f"dali:{device.type}")


def frame_times(path: str) -> tuple[VideoInfo, list[float]]:
    """Stream info and the sorted presentation times of every frame, from the packets (PyAV
    demuxing only, no decoding): what the DALI path needs to turn times into frame indices."""
    try:
        import av
    except ImportError as err:
        raise BackendUnavailable(f"the DALI path needs PyAV to read frame times (pip install av): "
                                 f"{err}") from err
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            base = stream.time_base
            pts = sorted(float(p.pts * base) for p in container.demux(stream) if p.pts is not None)
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            codec, width, height = stream.codec_context.name, stream.width, stream.height
            reject_text(path, codec)
    except VideoError:
        raise
    except Exception as err:  # PyAV's error on a bad container
        raise diagnose(path, err) from err
    if not pts:
        raise VideoError(f"{path}: video stream has zero frames")
    last = 1.0 / rate if rate > 0 else 0.0
    info = VideoInfo(path=path, duration=pts[-1] + last - pts[0], fps=rate, num_frames=len(pts),
                     width=width, height=height, codec=codec, start=pts[0])
    return info, pts


def frame_index(pts: list[float], times: list[float]) -> list[int]:
    """Index of the frame shown at each time: the last frame whose pts is <= the time."""
    table = torch.tensor(pts, dtype=torch.float64)
    found = torch.searchsorted(table, torch.tensor(times, dtype=torch.float64), right=True) - 1
    return found.clamp_(0, len(pts) - 1).tolist()
