"""saa_scores against an independent float64 numpy reference, on every backend.

Triton runs in its interpreter here (TRITON_INTERPRET=1 from conftest), numba natively; the
shapes are awkward (T = 0, 1, 2, 7, 33; 1x1, 17x23, 67x45 frames; 1 and 3 channels; both
layouts; non-contiguous views) and small enough for the interpreter.
"""
import importlib

import numpy as np
import pytest
import torch

from conftest import numba_available, triton_available
from tempo_fast.ops import saa_scores, saa_scores_ref

BACKENDS = ["torch"]
if numba_available():
    BACKENDS.append("numba")
if triton_available():
    BACKENDS.append("triton")

# (T, H, W, C)
SHAPES = [(1, 1, 1, 3), (2, 1, 1, 1), (2, 17, 23, 3), (7, 67, 45, 1), (7, 67, 45, 3), (33, 5, 7, 3), (33, 1, 1, 1)]


def reference(frames_thwc: np.ndarray) -> np.ndarray:
    """float64 scores: mean |f_t - f_{t-1}| / 255 per frame, s_0 = 0 (no torch, no integer tricks)."""
    a = frames_thwc.astype(np.float64)
    out = np.zeros(a.shape[0])
    for t in range(1, a.shape[0]):
        out[t] = np.mean(np.abs(a[t] - a[t - 1])) / 255.0
    return out


def random_frames(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def check(scores: torch.Tensor, expected: np.ndarray) -> None:
    assert scores.dtype == torch.float32 and scores.shape == (len(expected),)
    # Integer sums and one division: only the final float32 rounding separates the two.
    np.testing.assert_allclose(scores.double().numpy(), expected, rtol=1.2e-7, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_channels_last(shape, backend):
    frames = random_frames(shape)
    check(saa_scores(frames, backend=backend), reference(frames.numpy()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 17, 23, 3), (7, 67, 45, 1), (33, 5, 7, 3)])
def test_channels_first(shape, backend):
    t, h, w, c = shape
    frames = random_frames((t, c, h, w), seed=1)
    expected = reference(frames.permute(0, 2, 3, 1).numpy())
    check(saa_scores(frames, channels_last=False, backend=backend), expected)


def views():
    """Non-contiguous uint8 views, each with its [T, H, W, C] numpy copy."""
    base = random_frames((9, 3, 41, 50), seed=2)          # stored [T, C, H, W]
    yield "permuted", base.permute(0, 2, 3, 1), True
    yield "strided", base.permute(0, 2, 3, 1)[1::2, 3:40:2, ::3], True
    yield "one-channel", base.permute(0, 2, 3, 1)[:, 5:22, 1:24, 1:2], True
    yield "channels-first-crop", base[:, :, 7:30, 11:48], False
    yield "every-4th-frame", base.permute(0, 2, 3, 1)[::4], True
    yield "expanded", random_frames((5, 1, 9, 3), seed=3).expand(5, 11, 9, 3), True


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,view,channels_last", list(views()), ids=[v[0] for v in views()])
def test_non_contiguous(name, view, channels_last, backend):
    thwc = view if channels_last else view.permute(0, 2, 3, 1)
    assert not view.is_contiguous()
    check(saa_scores(view, channels_last=channels_last, backend=backend), reference(thwc.numpy()))


@pytest.mark.parametrize("shape", [(33, 17, 23, 3), (7, 67, 45, 1), (3, 200, 200, 3)])
def test_bit_identical_across_backends(shape):
    frames = random_frames(shape, seed=4)
    results = [saa_scores(frames, backend=b) for b in BACKENDS]
    for backend, result in zip(BACKENDS, results):
        assert torch.equal(result, results[0]), backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_extremes_are_exact(backend):
    # 0 -> 255 -> 255 -> 0 over frames of more than 2**16 elements (several int32 pieces and
    # blocks): sums of 255 * 270000 per frame, scores exactly 1, 0, 1.
    frames = torch.zeros((4, 300, 300, 3), dtype=torch.uint8)
    frames[1:3] = 255
    assert saa_scores(frames, backend=backend).tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_few_frames(backend):
    assert saa_scores(torch.zeros((0, 4, 4, 3), dtype=torch.uint8), backend=backend).shape == (0,)
    assert saa_scores(random_frames((1, 4, 4, 3)), backend=backend).tolist() == [0.0]


def test_triton_frame_ranges(monkeypatch):
    """Programs walking several frames (ragged last range) and one range over all frames."""
    if not triton_available():
        pytest.skip("triton not installed")
    from tempo_fast.ops._triton import saa_scores as kernel
    frames = random_frames((33, 13, 11, 3), seed=5)
    expected = reference(frames.numpy())
    for target in (1, 11):   # one range of 32 frames; ranges of 3 frames (32 = 10 * 3 + 2)
        monkeypatch.setattr(kernel, "TARGET_PROGRAMS", target)
        check(saa_scores(frames, backend="triton"), expected)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_numba_splits(monkeypatch, parallel):
    """Frames cut into many splits (ragged last one) and frame ranges of several frames, by the
    serial kernel (small inputs) and the parallel one."""
    if not numba_available():
        pytest.skip("numba not installed")
    from tempo_fast.ops._numba import saa_scores as kernel
    monkeypatch.setattr(kernel, "SERIAL_ELEMENTS", 0 if parallel else 1 << 40)
    frames = random_frames((33, 67, 45, 3), seed=6)
    expected = reference(frames.numpy())
    check(saa_scores(frames, backend="numba"), expected)
    monkeypatch.setattr(kernel, "SPLIT_ELEMENTS", 1000)
    check(saa_scores(frames, backend="numba"), expected)
    monkeypatch.setattr(kernel, "ITEMS_PER_THREAD", 1000)
    check(saa_scores(frames, backend="numba"), expected)
    check(saa_scores(frames.permute(0, 3, 1, 2)[:, :, :, ::2], channels_last=False, backend="numba"),
          reference(frames[:, :, ::2].numpy()))


def test_reference_chunks(monkeypatch):
    module = importlib.import_module("tempo_fast.ops.saa_scores")
    frames = random_frames((33, 5, 7, 3), seed=7)
    monkeypatch.setattr(module, "_REF_CHUNK_ELEMENTS", 5 * 7 * 3 * 4)
    check(saa_scores_ref(frames), reference(frames.numpy()))


def test_default_backend_on_cpu():
    frames = random_frames((7, 9, 8, 3), seed=8)
    check(saa_scores(frames), reference(frames.numpy()))


@pytest.mark.parametrize("bad,error,match", [
    (torch.zeros((4, 8, 8, 3)), TypeError, "uint8, got float32"),
    (torch.zeros((4, 8, 8), dtype=torch.uint8), ValueError, "4 dims, got shape"),
    (np.zeros((4, 8, 8, 3), dtype=np.uint8), TypeError, "torch.Tensor, got ndarray"),
    (torch.zeros((4, 3, 8, 8), dtype=torch.uint8), ValueError, "C=8 channels.*channels_last=False"),
    (torch.zeros((4, 0, 8, 3), dtype=torch.uint8), ValueError, "no pixels"),
])
def test_bad_inputs(bad, error, match):
    with pytest.raises(error, match=match):
        saa_scores(bad)


def test_bad_layout_and_backend():
    with pytest.raises(ValueError, match="C=64 channels.*channels_last=True"):
        saa_scores(torch.zeros((2, 3, 64, 64), dtype=torch.uint8).permute(0, 2, 3, 1), channels_last=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        saa_scores(torch.zeros((2, 4, 4, 3), dtype=torch.uint8), backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(2, 17, 23, 3), (65, 720, 1280, 3), (300, 64, 64, 3)])
def test_triton_cuda_bit_identical(shape):
    frames = random_frames(shape, seed=9)
    expected = saa_scores_ref(frames)
    cuda = frames.cuda()
    assert torch.equal(saa_scores(cuda, backend="triton").cpu(), expected)
    view = cuda.permute(0, 3, 1, 2)[:, :, 1:, ::2]
    assert torch.equal(saa_scores(view, channels_last=False).cpu(),
                       saa_scores_ref(frames.permute(0, 3, 1, 2)[:, :, 1:, ::2], channels_last=False))
