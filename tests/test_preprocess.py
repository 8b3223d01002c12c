"""Tests for tempo_fast.video.preprocess: smart_resize against transformers' own function, and
video_inputs (torch twin and native op) against references written here: torch's uint8 resize
rebuilt in numpy from its definition (PIL's int16 fixed-point weights, horizontal pass rounded to
uint8, then vertical), PIL-style antialiased bicubic in float64 for the float path, and the patch
layout built pixel by pixel with explicit loops. The comparisons with transformers' processor
need torchvision and run in the second CI venv: tests/test_transformers_compat.py."""
import math
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


def _u8_axis(n_in: int, n_out: int):
    """torch's uint8 weights along one axis: [n_out, n_in] int64 matrix and its precision."""
    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    taps = int(math.ceil(support)) * 2 + 1
    rows, wmax = [], 0.0
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        n = min(max(min(int(center + support + 0.5), n_in) - lo, 0), taps)
        w = [float(_cubic(np.array((lo + j - center + 0.5) * (1.0 / scale if scale >= 1.0 else 1.0))))
             for j in range(n)]
        total = sum(w)
        w = [v / total for v in w] if total != 0 else w
        wmax = max([wmax] + w)
        rows.append((lo, w))
    prec = next(p for p in range(23) if p == 22 or int(0.5 + wmax * (1 << (p + 1))) >= 1 << 15)
    mat = np.zeros((n_out, n_in), dtype=np.int64)
    for i, (lo, w) in enumerate(rows):
        for j, v in enumerate(w):
            v *= 1 << prec
            mat[i, lo + j] = int(-0.5 + v) if v < 0 else int(0.5 + v)
    return mat, prec


def _u8_pass(x: np.ndarray, mat: np.ndarray, prec: int, axis: int) -> np.ndarray:
    acc = np.moveaxis(np.tensordot(x.astype(np.int64), mat, axes=([axis], [1])), -1, axis)
    return np.clip((acc + (1 << (prec - 1))) >> prec, 0, 255).astype(np.uint8)


def u8_resize_reference(data: torch.Tensor, size) -> np.ndarray:
    """uint8 [T, C, H, W] -> [T, C, h, w] as torch resizes uint8 on the CPU (bicubic, antialias)."""
    x = data.numpy()
    if x.shape[3] != size[1]:
        x = _u8_pass(x, *_u8_axis(x.shape[3], size[1]), axis=3)
    if x.shape[2] != size[0]:
        x = _u8_pass(x, *_u8_axis(x.shape[2], size[0]), axis=2)
    return x


def _reference(data: torch.Tensor, size, quantize: bool, tp=2, p=14, m=2, mean=OPENAI_CLIP_MEAN,
               std=OPENAI_CLIP_STD) -> np.ndarray:
    if quantize:
        x = u8_resize_reference(data, size).astype(np.float64)
    else:
        x = data.double().numpy()
        x = np.einsum("oh,tchw,pw->tcop", _resample_matrix(x.shape[2], size[0]), x,
                      _resample_matrix(x.shape[3], size[1]))
    x = (x / 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
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


def native_or_skip():
    from tempo_fast import _native
    if not _native.has_kernel("preprocess_video", "cpu"):
        pytest.skip(f"native preprocess_video not built: {_native.reason() or 'no CPU kernel'}")


def _native_op(data, size, *, channels_last=False, dtype=torch.float32, isa=-1, tp=2, p=14, m=2,
               mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, quantize=True):
    shift = torch.tensor(mean, dtype=torch.float64).float() * 255.0
    scale = torch.tensor(std, dtype=torch.float64).float() * 255.0
    return torch.ops.tempo_fast.preprocess_video(data, channels_last, size[0], size[1], tp, p, m, shift, scale,
                                                 dtype, quantize, isa)


@pytest.mark.parametrize("t,h,w,size", SHAPES + [(2, 28, 56, (56, 28)), (2, 17, 300, (28, 84))])
def test_u8_resize_reference_is_torchs(t, h, w, size):
    """The numpy reference above is torch's uint8 kernel (so also what transformers runs on CPU)."""
    data = _frames(t, h, w, seed=h)
    got = torch.nn.functional.interpolate(data, size=size, mode="bicubic", antialias=True)
    np.testing.assert_array_equal(got.numpy(), u8_resize_reference(data, size))


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("t,h,w,size", SHAPES)
def test_video_inputs_matches_float64_reference(t, h, w, size, quantize, backend):
    if backend == "native":
        if not quantize:
            pytest.skip("the native CPU kernel is the uint8 (quantized) path")
        native_or_skip()
    data = _frames(t, h, w)
    out = video_inputs((data, torch.arange(t) * 0.5), size=size, quantize=quantize, backend=backend)
    ref = _reference(data, size, quantize)
    got = out["pixel_values_videos"].double().numpy()
    assert got.shape == ref.shape == (-(-t // 2) * size[0] * size[1] // 196, 1176)
    # the resize is exact (uint8 path) or float32 (float path); normalising in float32 costs ~1e-6
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5 if quantize else 1e-4)
    assert out["video_grid_thw"].tolist() == [[-(-t // 2), size[0] // 14, size[1] // 14]]


# (T, H, W, output size, layout): odd sides, T = 1, 4, 5, up- and downscaling, one axis unchanged
NATIVE_SHAPES = [
    (1, 29, 31, (28, 28), "tchw"), (4, 61, 45, (84, 56), "thwc"), (5, 130, 97, (56, 28), "tchw"),
    (5, 37, 53, (28, 56), "thwc"), (4, 28, 99, (28, 56), "tchw"), (1, 77, 56, (112, 56), "thwc"),
    (4, 45, 70, (56, 112), "tchw"), (2, 300, 17, (84, 28), "thwc"),
]


@pytest.mark.parametrize("isa", [0, -1])
@pytest.mark.parametrize("t,h,w,size,layout", NATIVE_SHAPES)
def test_native_equals_torch_twin(t, h, w, size, layout, isa):
    native_or_skip()
    data = _frames(t, h, w, seed=t + h)
    ref = video_inputs((data, torch.arange(t) * 0.5), size=size, backend="torch")["pixel_values_videos"]
    given = data.permute(0, 2, 3, 1).contiguous() if layout == "thwc" else data
    got = _native_op(given, size, channels_last=layout == "thwc", isa=isa)
    assert torch.equal(got, ref)
    np.testing.assert_allclose(got.double().numpy(), _reference(data, size, True), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("view", ["decoder", "stepped", "cropped", "expanded"])
def test_native_non_contiguous_views(view):
    native_or_skip()
    base = _frames(5, 66, 92, seed=3)
    data = {"decoder": base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),  # torchcodec's layout
            "stepped": base[:, :, ::2, 1::2],
            "cropped": base[1:, :, 3:60, 5:90],
            "expanded": base[:1].expand(4, -1, -1, -1)}[view]
    size = (56, 56)
    ref = video_inputs((data.contiguous(), torch.arange(data.shape[0]) * 1.0), size=size,
                       backend="torch")["pixel_values_videos"]
    assert torch.equal(video_inputs((data, torch.arange(data.shape[0]) * 1.0), size=size,
                                    backend="native")["pixel_values_videos"], ref)
    hwc = data.permute(0, 2, 3, 1)  # the same view seen as [T, H, W, C]
    out = video_inputs((hwc, torch.arange(data.shape[0]) * 1.0), size=size, channels_last=True, backend="native")
    assert torch.equal(out["pixel_values_videos"], ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_native_low_precision_is_the_rounded_float32(dtype):
    native_or_skip()
    data = _frames(3, 50, 41, seed=5)
    ref = video_inputs((data, [0.0, 0.5, 1.0]), size=(56, 28), backend="torch")["pixel_values_videos"]
    got = video_inputs((data, [0.0, 0.5, 1.0]), size=(56, 28), backend="native", dtype=dtype)["pixel_values_videos"]
    assert got.dtype == dtype and torch.equal(got, ref.to(dtype))


def test_native_qwen3_patch_and_grey_frames():
    native_or_skip()
    half = (0.5, 0.5, 0.5)
    data = _frames(5, 70, 90, seed=6)
    kw = dict(size=(64, 96), patch_size=16, mean=half, std=half)
    ref = video_inputs((data, torch.arange(5) * 1.0), backend="torch", **kw)["pixel_values_videos"]
    got = video_inputs((data, torch.arange(5) * 1.0), backend="native", **kw)["pixel_values_videos"]
    assert got.shape == (3 * 4 * 6, 3 * 2 * 16 * 16) and torch.equal(got, ref)
    np.testing.assert_allclose(got.double().numpy(), _reference(data, (64, 96), True, p=16, mean=half, std=half),
                               rtol=1e-6, atol=1e-5)
    grey = data[:, :1]
    one = dict(size=(56, 56), mean=(0.5,), std=(0.25,))
    assert torch.equal(video_inputs((grey, torch.arange(5) * 1.0), backend="native", **one)["pixel_values_videos"],
                       video_inputs((grey, torch.arange(5) * 1.0), backend="torch", **one)["pixel_values_videos"])


def test_native_is_the_default_on_cpu(monkeypatch):
    native_or_skip()
    import tempo_fast.video.preprocess as pp
    calls = []
    monkeypatch.setattr(pp, "video_inputs_native", lambda *a, **k: calls.append(1) or pp.video_inputs_torch(
        a[0] if not k.get("channels_last") else a[0].permute(0, 3, 1, 2), a[1],
        **{n: v for n, v in k.items() if n != "channels_last"}, chunk_frames=32))
    video_inputs((_frames(2, 30, 30), [0.0, 1.0]), size=(28, 28))
    assert calls == [1]
    video_inputs((_frames(2, 30, 30), [0.0, 1.0]), size=(28, 28), quantize=False)  # float path: torch
    assert calls == [1]


def test_native_errors():
    native_or_skip()
    data = _frames(2, 30, 30)
    with pytest.raises(RuntimeError, match="uint8"):
        _native_op(data.float(), (28, 28))
    with pytest.raises(RuntimeError, match="4-D"):
        _native_op(data[0], (28, 28))
    with pytest.raises(RuntimeError, match="1 or 3 channels"):
        _native_op(data, (28, 28), channels_last=True)  # [2, 30, 30, 3] read as C = 30
    with pytest.raises(RuntimeError, match="multiples of patch_size"):
        _native_op(data, (30, 28))
    with pytest.raises(RuntimeError, match="dtype must be"):
        _native_op(data, (28, 28), dtype=torch.float64)
    with pytest.raises(RuntimeError, match="quantize"):
        _native_op(data, (28, 28), quantize=False)
    with pytest.raises(RuntimeError, match="isa"):
        _native_op(data, (28, 28), isa=7)
    with pytest.raises(RuntimeError, match="quantize"):
        video_inputs((data, [0.0, 1.0]), size=(28, 28), quantize=False, backend="native")


def test_native_backend_says_why_when_not_built(monkeypatch):
    from tempo_fast import _native
    monkeypatch.setattr(_native, "_state", lambda: (None, "tempo_fast._C was not built: test"))
    with pytest.raises(RuntimeError, match="not built: test"):
        video_inputs((_frames(2, 30, 30), [0.0, 1.0]), size=(28, 28), backend="native")
    out = video_inputs((_frames(2, 30, 30), [0.0, 1.0]), size=(28, 28))  # None falls back to torch
    assert out["pixel_values_videos"].shape == (4, 1176)


def test_video_inputs_smart_size_chunks_and_views():
    data = _frames(7, 90, 70, seed=1)
    view = _frames(7, 90, 140, seed=2)[:, :, :, ::2]  # non-contiguous
    for frames in (data, view):
        whole = video_inputs((frames, torch.arange(7) / 3), min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 9,
                             backend="torch")
        assert whole["video_grid_thw"].tolist() == [[4, 6, 4]]  # smart_resize(90, 70) = (84, 56)
        np.testing.assert_allclose(whole["pixel_values_videos"].numpy(), _reference(frames, (84, 56), True),
                                   rtol=1e-6, atol=1e-5)
        for chunk in (1, 2, 3, 5):
            part = video_inputs((frames, torch.arange(7) / 3), min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 9,
                                chunk_frames=chunk, backend="torch")
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


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_video_inputs_bf16_output(backend):
    if backend == "native":
        native_or_skip()
    data = _frames(2, 40, 40)
    out32 = video_inputs((data, [0.0, 0.5]), size=(28, 28), backend=backend)["pixel_values_videos"]
    out16 = video_inputs((data, [0.0, 0.5]), size=(28, 28), dtype=torch.bfloat16,
                         backend=backend)["pixel_values_videos"]
    assert out16.dtype == torch.bfloat16
    assert torch.equal(out16, out32.to(torch.bfloat16))


def test_video_inputs_errors():
    data = _frames(2, 28, 28)
    with pytest.raises(TypeError, match="uint8"):
        video_inputs((data.float(), [0.0, 1.0]))
    with pytest.raises(ValueError, match="T=0"):
        video_inputs((data[:0], []))
    with pytest.raises(ValueError, match="channels_last=True"):
        video_inputs((data.permute(0, 2, 3, 1).contiguous(), [0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[T, H, W, C\]"):
        video_inputs((data, [0.0, 1.0]), channels_last=True)
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
    with pytest.raises(ValueError, match="backend"):
        video_inputs((data, [0.0, 1.0]), backend="numba")
    with pytest.raises(TypeError, match="dtype"):
        video_inputs((data, [0.0, 1.0]), dtype=torch.int32)


@pytest.mark.gpu
@pytest.mark.parametrize("quantize", [True, False])
def test_native_cuda_matches_torch_float_path(quantize):
    """The CUDA kernel against the torch twin on CUDA (the processor's float path there)."""
    from tempo_fast import _native
    if not _native.has_kernel("preprocess_video", "cuda"):
        pytest.skip(f"native preprocess_video has no CUDA kernel here: {_native.reason() or 'CPU-only build'}")
    for t, h, w, size, layout in NATIVE_SHAPES + [(16, 720, 1280, (560, 1008), "tchw")]:
        data = _frames(t, h, w, seed=t + h).cuda()
        given = data.permute(0, 2, 3, 1).contiguous() if layout == "thwc" else data
        kw = dict(size=size, quantize=quantize)
        ref = video_inputs((data, torch.arange(t) * 0.5), backend="torch", **kw)["pixel_values_videos"]
        got = video_inputs((given, torch.arange(t) * 0.5), backend="native", channels_last=layout == "thwc",
                           **kw)["pixel_values_videos"]
        one_level = 1 / (255 * min(OPENAI_CLIP_STD))
        # float32 sums in another order may move a value sitting on .5 by one level after rounding
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=one_level + 1e-5 if quantize else 1e-4)
        assert (got != ref).float().mean().item() < 1e-3
