"""SAA variation scores: how much each video frame differs from the one before it.

    saa_scores(frames)[0] = 0
    saa_scores(frames)[t] = mean over all pixels and channels of |f_t - f_{t-1}| / 255

Input: uint8 frames `[T, H, W, C]` (`channels_last=True`) or `[T, C, H, W]`
(`channels_last=False`), C in 1..4, any strides (non-contiguous views are read in place, never
copied). The mean is over every element of a frame, so the layout only decides which dimension
is checked as the channel one. Output: float32 `[T]` on the frames' device; `T = 0` gives an
empty result.

Exactness: every backend sums |f_t - f_{t-1}| in integers (int32 per block, int64 per frame) and
then divides once, `float32(float64(sum) / (255 * H * W * C))`, in one shared function
(`_finish`); so the result is exact up to that one rounding, deterministic, and bit-identical
across the torch, numba, Triton and native backends.

Bytes moved: the op is memory-bound. The Triton kernel and the numba kernel read every frame
once (a program walks consecutive frames keeping the previous frame's block in registers or
cache), i.e. T*H*W*C bytes, plus T*blocks*4 bytes of per-block partial sums; the torch reference
reads each frame twice and writes a uint8 |difference| of one chunk of frames at a time.

The native kernels (kernels/cpu/saa_scores.cpp, kernels/cuda/saa_scores.cu, op
`torch.ops.tempo_fast.saa_abs_diff_sums`) return the int64 sums: on CPU SAD instructions
(`_mm512_sad_epu8` / `_mm256_sad_epu8`, chosen at run time, scalar fallback; TEMPO_FAST_CPU_ISA
forces a level) over (frame range, 64 KiB block) items in parallel, reading each frame about
once; on CUDA 16-byte loads, `__vsadu4` and a block reduction per (pair, 16 KiB tile).

Backends: native for CPU tensors when the extension is built (measured fastest there:
benchmarks/bench_saa.py), else numba (parallel over frame ranges and pixel blocks); Triton for
CUDA tensors (the native CUDA kernel is not yet measured against it: pass backend="native");
torch everywhere. There is no gradient (the input is uint8).
"""
from __future__ import annotations

import torch

from .. import _native
from ._backend import check_tensor, resolve_backend

_OP = "saa_scores"
_NATIVE_OP = "saa_abs_diff_sums"
# Devices on which backend=None picks the native kernel (measured fastest there).
_NATIVE_DEFAULT = ("cpu",)

# Elements of frames differenced at a time by the torch reference: bounds its extra memory.
_REF_CHUNK_ELEMENTS = 1 << 24


def _check_frames(frames, channels_last: bool) -> torch.Tensor:
    check_tensor(_OP, "frames", frames, ndim=4, dtypes=(torch.uint8,))
    channel_dim = 3 if channels_last else 1
    channels = frames.shape[channel_dim]
    if not 1 <= channels <= 4:
        layout = "[T, H, W, C]" if channels_last else "[T, C, H, W]"
        other = "False ([T, C, H, W])" if channels_last else "True ([T, H, W, C])"
        raise ValueError(f"{_OP}: frames of shape {tuple(frames.shape)} read as {layout} with "
                         f"channels_last={channels_last} have C={channels} channels; expected 1 to 4 "
                         f"(pass channels_last={other} if that is the layout)")
    if frames.shape[0] > 0 and frames[0].numel() == 0:
        raise ValueError(f"{_OP}: frames of shape {tuple(frames.shape)} have no pixels; the mean "
                         "difference of an empty frame is undefined")
    return frames


def _finish(pair_sums: torch.Tensor, elements_per_frame: int) -> torch.Tensor:
    """int64 sums of |f_t - f_{t-1}| for t = 1..T-1 -> float32 scores `[T]` (s_0 = 0).

    The one division every backend shares, so that their results are bit-identical.
    """
    sums = torch.cat([pair_sums.new_zeros(1), pair_sums.to(torch.int64)])
    return (sums.to(torch.float64) / (255.0 * elements_per_frame)).to(torch.float32)


def saa_scores_ref(frames: torch.Tensor, *, channels_last: bool = True) -> torch.Tensor:
    """The torch reference: |diff| of chunks of frames as max - min in uint8, summed in int64."""
    _check_frames(frames, channels_last)
    count = frames.shape[0]
    if count < 2:
        return torch.zeros(count, dtype=torch.float32, device=frames.device)
    per_frame = frames[0].numel()
    step = max(1, _REF_CHUNK_ELEMENTS // per_frame)
    pair_sums = []
    for start in range(1, count, step):
        cur, prev = frames[start:start + step], frames[start - 1:start - 1 + step]
        prev = prev[:cur.shape[0]]
        # |a - b| = max(a, b) - min(a, b) is exact in uint8: no widened copy is needed.
        diff = torch.maximum(cur, prev) - torch.minimum(cur, prev)
        pair_sums.append(diff.flatten(1).sum(1, dtype=torch.int64))
    return _finish(torch.cat(pair_sums), per_frame)


def _frame_dims(frames: torch.Tensor) -> tuple[list[int], list[int]]:
    """The within-frame (size, stride) pairs, reordered and merged into exactly 3 dimensions.

    The sum over a frame does not depend on the order in which its elements are visited, so the
    dimensions are sorted by decreasing stride (smallest stride last, for coalesced reads) and
    merged where they are contiguous with each other; a contiguous frame becomes one dimension,
    padded in front with size-1 dimensions.
    """
    dims = sorted(((n, st) for n, st in zip(frames.shape[1:], frames.stride()[1:]) if n != 1),
                  key=lambda d: d[1], reverse=True)
    merged: list[tuple[int, int]] = []
    for size, stride in dims:
        if merged and merged[-1][1] == stride * size:
            merged[-1] = (merged[-1][0] * size, stride)
        else:
            merged.append((size, stride))
    merged = [(1, 0)] * (3 - len(merged)) + merged
    return [m[0] for m in merged], [m[1] for m in merged]


def saa_scores_triton(frames: torch.Tensor, *, channels_last: bool = True) -> torch.Tensor:
    """Triton launcher: grid (pixel blocks, frame ranges), per-block int32 sums, int64 reduce."""
    _check_frames(frames, channels_last)
    count = frames.shape[0]
    if count < 2:
        return torch.zeros(count, dtype=torch.float32, device=frames.device)
    from ._triton.saa_scores import launch

    sizes, strides = _frame_dims(frames)
    partial = launch(frames, sizes, strides)
    return _finish(partial.sum(1, dtype=torch.int64), frames[0].numel())


def saa_scores_numba(frames: torch.Tensor, *, channels_last: bool = True) -> torch.Tensor:
    """numba launcher: (frame range, pixel split) items in parallel, int64 sums per item."""
    _check_frames(frames, channels_last)
    count = frames.shape[0]
    if count < 2:
        return torch.zeros(count, dtype=torch.float32, device=frames.device)
    if frames.device.type != "cpu":
        raise ValueError(f"{_OP}: the numba kernel runs CPU tensors only, got a tensor on {frames.device}")
    from ._numba.saa_scores import frame_abs_diff_sums

    sizes, strides = _frame_dims(frames)
    # The memory the frames span, as one flat uint8 view starting at their first element
    # (a view of the same storage: nothing is copied).
    span = 1 + (count - 1) * frames.stride(0) + sum((n - 1) * st for n, st in zip(sizes, strides))
    buf = frames.as_strided((span,), (1,)).numpy()
    partial = frame_abs_diff_sums(buf, count, frames.stride(0), sizes, strides, torch.get_num_threads())
    return _finish(torch.from_numpy(partial).sum(1), frames[0].numel())


def saa_scores_native(frames: torch.Tensor, *, channels_last: bool = True, isa: str | None = None) -> torch.Tensor:
    """Native launcher: int64 sums from `torch.ops.tempo_fast.saa_abs_diff_sums`.

    isa (CPU only): None (TEMPO_FAST_CPU_ISA, else the best this CPU has), "scalar", "avx2" or
    "avx512bw", to force one code path.
    """
    _check_frames(frames, channels_last)
    count = frames.shape[0]
    if count < 2:
        return torch.zeros(count, dtype=torch.float32, device=frames.device)
    _native.load()
    level = _native.cpu_isa(isa) if frames.device.type == "cpu" else -1
    sums = torch.ops.tempo_fast.saa_abs_diff_sums(frames, level)
    return _finish(sums, frames[0].numel())


def saa_scores(frames: torch.Tensor, *, channels_last: bool = True, backend: str | None = None) -> torch.Tensor:
    """Per-frame variation scores `[T]` float32 of uint8 frames (see the module docstring).

    backend: None (native on CPU when the extension is built, else numba when installed, else
    torch; Triton on CUDA), "torch", "triton", "numba" or "native".
    """
    check_tensor(_OP, "frames", frames, ndim=4, dtypes=(torch.uint8,))
    which = resolve_backend(_OP, frames, backend, numba=True, native=_NATIVE_OP, native_default=_NATIVE_DEFAULT)
    if which == "native":
        return saa_scores_native(frames, channels_last=channels_last)
    if which == "triton":
        return saa_scores_triton(frames, channels_last=channels_last)
    if which == "numba":
        return saa_scores_numba(frames, channels_last=channels_last)
    return saa_scores_ref(frames, channels_last=channels_last)

