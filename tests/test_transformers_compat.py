"""video_inputs against transformers' Qwen2VLVideoProcessor itself, as it runs on the CPU.

The processor resizes through torchvision, which on the CPU hands uint8 bicubic frames to torch's
native uint8 kernel: so every backend of video_inputs must give the processor's pixel_values_videos
exactly (the brief's bound is relative error < 1e-5; here they are bit-equal), on random, smooth and
decoded frames, at 64x64 to 720x1280, T = 1, 4, 5, 16, under the default pixel budget and a small
one. Also: second_per_grid_ts from a real decode's metadata against the processor's sampling, and
the rotary ids transformers builds from them against tempo_fast.video.eta_position_ids.

These need torchvision, which is not in the main environment (its index build is CUDA-only and
breaks CPU imports there): .ci/run runs them in a second venv (torch 2.14.1 + torchvision 0.29.1 +
transformers 5.23.0) with `-m transformers` and fails if none ran. Elsewhere they skip.
"""
import math

import pytest
import torch

pytest.importorskip("torchvision", reason="transformers' video processor needs torchvision (second CI venv)")
pytestmark = pytest.mark.transformers

from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402

from tempo_fast import _native  # noqa: E402
from tempo_fast.video import clips, decode, eta_position_ids, video_inputs  # noqa: E402
from tempo_fast.video.eta import VIDEO_TOKEN_ID  # noqa: E402
from tempo_fast.video.preprocess import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS  # noqa: E402

SIZES = [(64, 64), (84, 84), (224, 224), (360, 640), (720, 1280)]
FRAMES = [1, 4, 5, 16]
BUDGETS = {"default": (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS), "small": (28 * 28 * 4, 28 * 28 * 64)}
BACKENDS = ["torch"] + (["native"] if _native.has_kernel("preprocess_video", "cpu") else [])


def _processor(budget: str) -> Qwen2VLVideoProcessor:
    lo, hi = BUDGETS[budget]
    return Qwen2VLVideoProcessor(min_pixels=lo, max_pixels=hi)


def _random(t, h, w):
    g = torch.Generator().manual_seed(h * 7 + w + t)
    return torch.randint(0, 256, (t, 3, h, w), generator=g, dtype=torch.uint8)


def _smooth(t, h, w):
    """Gradients and slow waves: what resizing does to natural images, not to noise."""
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    k = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1)
    c = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    img = 127.5 + 100 * torch.sin(6.0 * x * c + 4.0 * y + 0.3 * k) * torch.cos(3.0 * y * c - 0.2 * k)
    return img.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """16 decoded H.264 frames per size (torchcodec's channels-last layout, as decode returns them)."""
    root = tmp_path_factory.mktemp("compat_clips")
    out = {}
    for h, w in SIZES:
        path = clips.make_clip(root / f"clip_{h}x{w}.mp4", width=w, height=h, fps=8, seconds=2)
        frames = decode(path)
        assert frames.data.shape[0] == 16
        out[(h, w)] = frames.data
    return out


def _check_equal(data, budget, backends=BACKENDS):
    ref = _processor(budget)(videos=[data.contiguous()], return_tensors="pt", cap_pixels_per_frame=False)
    lo, hi = BUDGETS[budget]
    for backend in backends:
        out = video_inputs((data, torch.arange(data.shape[0]) / 8.0), min_pixels=lo, max_pixels=hi,
                           backend=backend)
        assert out["video_grid_thw"].tolist() == ref["video_grid_thw"].tolist(), backend
        got, want = out["pixel_values_videos"], ref["pixel_values_videos"]
        assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
        rel = ((got - want).abs().max() / want.abs().max()).item()
        assert rel < 1e-5, (backend, rel)
        assert torch.equal(got, want), (backend, "not bit-equal", rel)


@pytest.mark.parametrize("budget", sorted(BUDGETS))
@pytest.mark.parametrize("t", FRAMES)
@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("source", ["random", "smooth"])
def test_equals_processor_on_synthetic_frames(source, h, w, t, budget):
    _check_equal((_random if source == "random" else _smooth)(t, h, w), budget)


@pytest.mark.parametrize("budget", sorted(BUDGETS))
@pytest.mark.parametrize("t", FRAMES)
@pytest.mark.parametrize("h,w", SIZES)
def test_equals_processor_on_decoded_frames(decoded, h, w, t, budget):
    _check_equal(decoded[(h, w)][:t], budget)


def test_u8_resize_reference_equals_torchvision():
    """The numpy rebuild in test_preprocess (which the native op is tested against) is what
    torchvision's CPU resize returns here, on this torch."""
    from test_preprocess import u8_resize_reference
    from torchvision.transforms.v2 import functional as tvF

    for (t, h, w), size in [((3, 61, 97), (56, 84)), ((2, 720, 1280), (560, 1008)), ((1, 30, 40), (84, 112))]:
        data = _random(t, h, w)
        got = tvF.resize(data, list(size), interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        assert torch.equal(got, torch.from_numpy(u8_resize_reference(data, size)))


@pytest.mark.parametrize("clip_fps,seconds", [(24, 4), (30, 3)])
def test_second_per_grid_ts_and_rope_from_real_metadata(tmp_path, clip_fps, seconds):
    """The processor samples 2 fps from a decoded clip given its real metadata; Qwen2.5-VL's
    processor would set second_per_grid_ts = 2 / sampled_fps. video_inputs on the same frames, with
    the frames' real pts, gives the same second_per_grid_ts, the same pixels, and rotary ids equal
    to transformers' get_rope_index."""
    from test_eta import _hf_rope

    path = clips.make_clip(tmp_path / "real.mp4", width=160, height=120, fps=clip_fps, seconds=seconds)
    full = decode(path)
    meta = VideoMetadata(total_num_frames=full.data.shape[0], fps=full.fps, duration=full.duration,
                         width=160, height=120)
    ref = _processor("small")(videos=[full.data.contiguous()], video_metadata=[meta], do_sample_frames=True,
                              fps=2, return_metadata=True, return_tensors="pt", cap_pixels_per_frame=False)
    sampled = ref["video_metadata"][0]
    index = torch.as_tensor(sampled.frames_indices, dtype=torch.long)
    spg_ref = 2 / sampled.sampled_fps
    lo, hi = BUDGETS["small"]
    out = video_inputs((full.data[index], full.pts[index]), min_pixels=lo, max_pixels=hi)
    assert torch.equal(out["pixel_values_videos"], ref["pixel_values_videos"])
    assert out["second_per_grid_ts"].item() == pytest.approx(spg_ref, rel=1e-6)
    assert math.isclose(spg_ref, 1.0, rel_tol=1e-9)  # 2 frames per patch at 2 fps

    grid = out["video_grid_thw"][0].tolist()
    n_video = grid[0] * grid[1] * grid[2] // 4
    ids = torch.cat([torch.arange(5), torch.full((n_video,), VIDEO_TOKEN_ID), torch.arange(3)])[None]
    want, _ = _hf_rope("qwen2_5_vl")(ids, video_grid_thw=out["video_grid_thw"],
                                     second_per_grid_ts=torch.tensor([spg_ref]))
    got = eta_position_ids(ids, [grid], [full.pts[index]], after_vision="spatial")
    assert torch.equal(got, want)
