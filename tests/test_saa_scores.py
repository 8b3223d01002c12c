"""saa_scores against an independent float64 numpy reference, on every backend.

Triton runs in its interpreter here (TRITON_INTERPRET=1 from conftest), numba and the native
extension natively; the shapes are awkward (T = 0, 1, 2, 7, 33; 1x1, 17x23, 67x45 frames; 1 and
3 channels; both layouts; non-contiguous views) and small enough for the interpreter. The
native kernel is also checked on its own (every SIMD level this CPU has, forced; row lengths
around the vector widths; block and thread splits; strided and expanded views) against exact
int64 sums computed by numpy.
"""
import importlib

import numpy as np
import pytest
import torch

from conftest import numba_available, triton_available
from tempo_fast import _native
from tempo_fast.ops import saa_scores, saa_scores_ref
from tempo_fast.ops.saa_scores import saa_scores_native

NATIVE = _native.has_kernel("saa_abs_diff_sums", "cpu")
BACKENDS = ["torch"]
if numba_available():
    BACKENDS.append("numba")
if triton_available():
    BACKENDS.append("triton")
if NATIVE:
    BACKENDS.append("native")

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


# ---- the native kernel on its own -------------------------------------------------------------

needs_native = pytest.mark.skipif(not NATIVE, reason=f"tempo_fast._C not available: {_native.reason()}")
ISA_NAMES = ["scalar", "avx2", "avx512bw"]


def isa_levels() -> list[str]:
    """The SIMD levels this CPU runs (each is forced in turn)."""
    if not NATIVE:
        return ["scalar"]
    return ISA_NAMES[:ISA_NAMES.index(torch.ops.tempo_fast.cpu_isa()) + 1]


def exact_sums(frames_np: np.ndarray) -> np.ndarray:
    """int64 sums of |f_t - f_{t-1}| per frame pair, in numpy (independent of the kernel)."""
    a = frames_np.astype(np.int64)
    if len(a) < 2:
        return np.zeros(0, dtype=np.int64)
    return np.abs(a[1:] - a[:-1]).reshape(len(a) - 1, -1).sum(1)


def native_sums(frames: torch.Tensor, isa: str) -> np.ndarray:
    sums = torch.ops.tempo_fast.saa_abs_diff_sums(frames, _native.cpu_isa(isa))
    assert sums.dtype == torch.int64 and sums.shape == (max(frames.shape[0] - 1, 0),)
    return sums.numpy()


NATIVE_SHAPES = [(t, h, w, c) for t, h, w, c in [
    (1, 1, 1, 1), (1, 224, 224, 3), (2, 1, 1, 3), (2, 3, 17, 4), (2, 31, 1, 1), (2, 224, 224, 3),
    (7, 1, 31, 3), (7, 17, 3, 4), (7, 31, 31, 1), (7, 3, 224, 3), (7, 17, 31, 3), (2, 224, 31, 4),
]]


@needs_native
@pytest.mark.parametrize("isa", isa_levels())
@pytest.mark.parametrize("shape", NATIVE_SHAPES, ids=["x".join(map(str, s)) for s in NATIVE_SHAPES])
def test_native_awkward_shapes(shape, isa, monkeypatch):
    frames = random_frames(shape, seed=sum(shape))
    np.testing.assert_array_equal(native_sums(frames, isa), exact_sums(frames.numpy()))
    monkeypatch.setenv("TEMPO_FAST_CPU_ISA", isa)
    scores = saa_scores(frames, backend="native")
    check(scores, reference(frames.numpy()))
    assert torch.equal(scores, saa_scores_ref(frames))
    first = frames.permute(0, 3, 1, 2).contiguous()
    assert torch.equal(saa_scores(first, channels_last=False, backend="native"), scores)


@needs_native
@pytest.mark.parametrize("isa", isa_levels())
def test_native_row_tails(isa):
    """Rows of every length around the 32- and 64-byte vectors (and a row cut into 64 KiB pieces)."""
    lengths = [1, 15, 16, 31, 32, 33, 63, 64, 65, 95, 127, 128, 129, 191, 200, 255, 257]
    for length in lengths + [(1 << 16) + 77]:
        frames = random_frames((3, 1, length, 1), seed=length)
        np.testing.assert_array_equal(native_sums(frames, isa), exact_sums(frames.numpy()), err_msg=str(length))
    # rows of a cropped frame start at unaligned addresses
    base = random_frames((3, 9, 101, 3), seed=11)
    for view in (base[:, 1:8, 3:90], base[:, :, 1:]):
        np.testing.assert_array_equal(native_sums(view, isa), exact_sums(view.numpy()))


def native_views():
    """Views the native kernel reads in place: unit-stride rows, strided rows (the scalar
    strided path), expanded (stride-0) dimensions, frame steps, channels first."""
    base = random_frames((13, 3, 37, 45), seed=12)          # stored [T, C, H, W]
    thwc = base.permute(0, 2, 3, 1)
    yield "permuted", thwc
    yield "frame-step", thwc[1::3]
    yield "crop", thwc[:, 2:35, 5:44, :]
    yield "strided-width", thwc[:, :, ::3, 1:2]              # rows of stride 3
    yield "strided-all", base[:, ::2, 1::4, ::5]
    yield "channels-first-crop", base[:, :, 3:31, 2:40]
    yield "expanded-width", random_frames((6, 17, 1, 3), seed=13).expand(6, 17, 29, 3)
    yield "expanded-frames", random_frames((1, 5, 7, 3), seed=14).expand(4, 5, 7, 3)
    yield "transposed-hw", thwc.transpose(1, 2)


@needs_native
@pytest.mark.parametrize("isa", isa_levels())
@pytest.mark.parametrize("name,view", list(native_views()), ids=[v[0] for v in native_views()])
def test_native_views(name, view, isa):
    np.testing.assert_array_equal(native_sums(view, isa), exact_sums(view.numpy()))


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(41, 96, 96, 3), (5, 300, 300, 3), (300, 6, 6, 3), (3, 40, 70000, 1)])
def test_native_splits(shape, threads):
    """Frames of several 64 KiB blocks, many frame ranges, rows longer than a block; serial and
    threaded (over the serial-size threshold)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        frames = random_frames(shape, seed=15)
        np.testing.assert_array_equal(native_sums(frames, "scalar" if threads == 1 else None),
                                      exact_sums(frames.numpy()))
        np.testing.assert_array_equal(native_sums(frames[:, :, 1:], None), exact_sums(frames[:, :, 1:].numpy()))
    finally:
        torch.set_num_threads(before)


@needs_native
def test_native_bad_inputs():
    op = torch.ops.tempo_fast.saa_abs_diff_sums
    with pytest.raises(RuntimeError, match="must be uint8, got Float"):
        op(torch.zeros((2, 4, 4, 3)), -1)
    with pytest.raises(RuntimeError, match="must have 4 dims, got shape"):
        op(torch.zeros((2, 4, 4), dtype=torch.uint8), -1)
    with pytest.raises(RuntimeError, match="isa must be -1"):
        op(torch.zeros((2, 4, 4, 3), dtype=torch.uint8), 7)
    if torch.ops.tempo_fast.cpu_isa() != "avx512bw":
        with pytest.raises(RuntimeError, match="not supported by this CPU"):
            op(torch.zeros((2, 4, 4, 3), dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="got 'avx9'"):
        saa_scores_native(torch.zeros((2, 4, 4, 3), dtype=torch.uint8), isa="avx9")
    # the public op checks first, with the layout in the message
    with pytest.raises(ValueError, match="C=8 channels"):
        saa_scores(torch.zeros((4, 3, 8, 8), dtype=torch.uint8), backend="native")
    with pytest.raises(TypeError, match="uint8, got int16"):
        saa_scores(torch.zeros((4, 8, 8, 3), dtype=torch.int16), backend="native")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(2, 17, 23, 3), (65, 720, 1280, 3), (300, 64, 64, 3), (7, 31, 1, 1)])
def test_native_cuda_bit_identical(shape):
    if not _native.has_kernel("saa_abs_diff_sums", "cuda"):
        pytest.skip(f"tempo_fast._C has no CUDA kernel here: {_native.reason() or 'built without its CUDA part'}")
    frames = random_frames(shape, seed=16)
    cuda = frames.cuda()
    assert torch.equal(saa_scores(cuda, backend="native").cpu(), saa_scores_ref(frames))
    for view_cpu, view_gpu, last in [
        (frames[:, :, 1:], cuda[:, :, 1:], True),                                 # rows, unaligned
        (frames.permute(0, 3, 1, 2)[:, :, 1:, ::2], cuda.permute(0, 3, 1, 2)[:, :, 1:, ::2], False),
        (frames[1:], cuda[1:], True),                                             # offset start
    ]:
        got = saa_scores(view_gpu, channels_last=last, backend="native").cpu()
        assert torch.equal(got, saa_scores_ref(view_cpu, channels_last=last))
    np.testing.assert_array_equal(torch.ops.tempo_fast.saa_abs_diff_sums(cuda, -1).cpu().numpy(),
                                  exact_sums(frames.numpy()))
