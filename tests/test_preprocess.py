"""Tests for tempo_fast.video.preprocess: smart_resize against transformers' own function, and
video_inputs against a float64 reference written here (PIL-style antialiased bicubic, a = -0.5,
and the patch layout built pixel by pixel with explicit loops), plus transformers'
Qwen2VLVideoProcessor where torchvision is installed (it is not on the CPU machines)."""
import types

import numpy as np
import pytest
import torch

from tempo_fast.video.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, smart_resize, video_inputs

# (T, H, W, output size): odd T (padding), odd sides, down- and up-scaling, a single frame.
SHAPES = [
    (3, 37, 53, (28, 56)),
    (4, 61, 45, (84, 56)),
    (1, 29, 31, (28, 28)),
    (5, 130, 97, (56, 28)),
]


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of PIL's antialiased bicubic along one axis."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale
    w = _cubic((np.arange(n_in)[None, :] + 0.5 - centers[:, None]) / stretch)
    return w / w.sum(1, keepdims=True)


def _reference(data: torch.Tensor, size, quantize: bool, tp=2, p=14, m=2) -> np.ndarray:
    x = data.double().numpy()
    x = np.einsum("oh,tchw,pw->tcop", _resample_matrix(x.shape[2], size[0]), x,
                  _resample_matrix(x.shape[3], size[1]))
    if quantize:
        x = np.round(np.clip(x, 0, 255))
    x = (x / 255 - np.array(OPENAI_CLIP_MEAN)[:, None, None]) / np.array(OPENAI_CLIP_STD)[:, None, None]
    t, c = x.shape[:2]
    x = np.concatenate([x, np.repeat(x[-1:], -t % tp, 0)])
    gt, gh, gw = x.shape[0] // tp, size[0] // p, size[1] // p
    rows = []
    for it in range(gt):
        for bh in range(gh // m):
            for bw in range(gw // m):
                for mh in range(m):
                    for mw in range(m):
                        y, xx = (bh * m + mh) * p, (bw * m + mw) * p
                        rows.append(np.concatenate([x[it * tp + k, ch, y:y + p, xx:xx + p].ravel()
                                                    for ch in range(c) for k in range(tp)]))
    return np.stack(rows)


def _frames(t, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), generator=g, dtype=torch.uint8)


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize
    bounds = [(56 * 56, 14 * 14 * 4 * 1280, 28), (128 * 28 * 28, 768 * 28 * 28, 28), (4 * 32 * 32, 64 * 32 * 32, 32)]
    sizes = list(range(1, 90, 7)) + [100, 224, 239, 360, 480, 719, 720, 1080, 1920, 4000]
    for lo, hi, factor in bounds:
        for h in sizes:
            for w in sizes:
                if max(h, w) / min(h, w) > 200:
                    continue
                assert smart_resize(h, w, factor, lo, hi) == hf_smart_resize(h, w, factor, lo, hi), (h, w, lo, hi)


def test_smart_resize_errors():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 300)
    with pytest.raises(ValueError, match="height"):
        smart_resize(0, 10)
    with pytest.raises(ValueError, match="min_pixels"):
        smart_resize(100, 100, min_pixels=10_000, max_pixels=100)


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("t,h,w,size", SHAPES)
def test_video_inputs_matches_float64_reference(t, h, w, size, quantize):
    data = _frames(t, h, w)
    out = video_inputs((data, torch.arange(t) * 0.5), size=size, quantize=quantize)
    ref = _reference(data, size, quantize)
    got = out["pixel_values_videos"].double().numpy()
    assert got.shape == ref.shape == (-(-t // 2) * size[0] * size[1] // 196, 1176)
    err = np.abs(got - ref)
    if not quantize:
        assert err.max() < 1e-4
    else:
        # float32 vs float64 may round a value sitting on .5 the other way: one uint8 level at most,
        # on a small fraction of the elements
        one_level = 1 / (255 * min(OPENAI_CLIP_STD))
        assert err.max() < one_level + 1e-4
        assert (err > 1e-4).mean() < 1e-3
    assert out["video_grid_thw"].tolist() == [[-(-t // 2), size[0] // 14, size[1] // 14]]


def test_video_inputs_smart_size_chunks_and_views():
    data = _frames(7, 90, 70, seed=1)
    view = _frames(7, 90, 140, seed=2)[:, :, :, ::2]  # non-contiguous
    for frames in (data, view):
        whole = video_inputs((frames, torch.arange(7) / 3), min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 9)
        assert whole["video_grid_thw"].tolist() == [[4, 6, 4]]  # smart_resize(90, 70) = (84, 56)
        np.testing.assert_allclose(whole["pixel_values_videos"].numpy(), _reference(frames, (84, 56), True),
                                   atol=1 / (255 * min(OPENAI_CLIP_STD)) + 1e-4)
        for chunk in (1, 2, 3, 5):
            part = video_inputs((frames, torch.arange(7) / 3), min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 9,
                                chunk_frames=chunk)
            assert torch.equal(part["pixel_values_videos"], whole["pixel_values_videos"])


def test_video_inputs_timing_and_frames_object():
    data = _frames(6, 28, 28)
    fps = 2.5
    frames = types.SimpleNamespace(data=data, pts=torch.arange(6, dtype=torch.float64) / fps, fps=fps, duration=3.0)
    out = video_inputs(frames)
    assert out["second_per_grid_ts"].item() == pytest.approx(2 / fps)
    assert out["slot_times"].tolist() == pytest.approx([0.2, 1.0, 1.8])
    one = video_inputs(types.SimpleNamespace(data=data[:1], pts=[4.0], fps=fps))
    assert one["second_per_grid_ts"].item() == pytest.approx(2 / fps)
    assert one["slot_times"].tolist() == [4.0]
    odd = video_inputs(data[:3], pts=[0.0, 0.4, 1.0])
    assert odd["slot_times"].tolist() == pytest.approx([0.2, 1.0])
    assert odd["second_per_grid_ts"].item() == pytest.approx(1.0)


def test_video_inputs_bf16_output():
    data = _frames(2, 40, 40)
    out32 = video_inputs((data, [0.0, 0.5]), size=(28, 28))["pixel_values_videos"]
    out16 = video_inputs((data, [0.0, 0.5]), size=(28, 28), dtype=torch.bfloat16)["pixel_values_videos"]
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32, atol=2e-2, rtol=1e-2)


def test_video_inputs_errors():
    data = _frames(2, 28, 28)
    with pytest.raises(TypeError, match="uint8"):
        video_inputs((data.float(), [0.0, 1.0]))
    with pytest.raises(ValueError, match="T=0"):
        video_inputs((data[:0], []))
    with pytest.raises(ValueError, match="channels last"):
        video_inputs((data.permute(0, 2, 3, 1).contiguous(), [0.0, 1.0]))
    with pytest.raises(ValueError, match="one time per frame"):
        video_inputs((data, [0.0]))
    with pytest.raises(ValueError, match="sorted"):
        video_inputs((data, [1.0, 0.0]))
    with pytest.raises(ValueError, match="frame times are needed"):
        video_inputs(data)
    with pytest.raises(ValueError, match="multiples"):
        video_inputs((data, [0.0, 1.0]), size=(30, 28))
    with pytest.raises(ValueError, match="mean and std"):
        video_inputs((data, [0.0, 1.0]), mean=(0.5, 0.5))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_video_inputs_matches_transformers_processor(device):
    pytest.importorskip("torchvision", reason="transformers' Qwen2VLVideoProcessor needs torchvision")
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    processor = Qwen2VLVideoProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 12)
    for t, h, w in [(4, 90, 70), (3, 61, 123), (1, 200, 150)]:
        data = _frames(t, h, w, seed=t)
        ref = processor(videos=[data], return_tensors="pt", cap_pixels_per_frame=False)
        out = video_inputs((data.to(device), torch.arange(t) / 2.0),
                           min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 12)
        assert out["video_grid_thw"].cpu().tolist() == ref["video_grid_thw"].tolist()
        torch.testing.assert_close(out["pixel_values_videos"].cpu(), ref["pixel_values_videos"],
                                   atol=1 / (255 * min(OPENAI_CLIP_STD)) + 1e-5, rtol=0)
        if device == "cpu":
            assert torch.equal(out["pixel_values_videos"], ref["pixel_values_videos"])
