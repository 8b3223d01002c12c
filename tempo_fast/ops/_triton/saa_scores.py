"""Triton kernel of `saa_scores`: per-block integer sums of |f_t - f_{t-1}| over uint8 frames.

Grid (pixel blocks, frame ranges). A program owns one block of BLOCK elements of every frame in
its range: it loads that block of the frame before the range once, then walks the range, so each
frame is read once (plus one frame per range). The sum of a block fits in int32
(255 * BLOCK < 2**31); the launcher reduces the blocks of a frame in int64. The pixel blocks are
on grid axis 0 (limit 2**31 - 1) and the frame ranges on axis 1 (limit 65535, which the launcher
respects by lengthening the ranges).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._backend import cdiv, next_power_of_2

# Elements per program and frame: 32 uint8 per thread with 4 warps, int32 partial sums are exact.
# On the H200 that is two 16-byte loads per thread and frame at 62 registers (162 for a strided
# crop; benchmarks/sm90_compile.py), so 8 programs of 4 warps are resident per SM.
BLOCK = 4096
# Programs the launcher aims for: enough to fill a large GPU several times over. On the H200
# (132 SMs x 8 resident programs = 1056) 8192 is ~8 waves; the price is that each range re-reads
# the frame before it, which at 256 frames of 224x224x3 means one frame per range (2x the bytes).
# Fewer, longer ranges read less but keep fewer loads in flight; benchmarks/gpu_suite.py times
# both (its "tiles" stage) so that a GPU run can settle it.
TARGET_PROGRAMS = 8192
MAX_GRID_Y = 65535


@triton.jit
def _saa_scores_kernel(
    frames_ptr, partial_ptr,            # uint8 frames (any strides); int32 [T - 1, blocks] output
    num_frames, frames_per_range,       # T; frames each program walks
    size1, size2,                       # a frame viewed as [size0, size1, size2] (size0 implicit)
    stride_t, stride0, stride1, stride2,  # element strides of the frames, time and within a frame
    num_elements, num_blocks,           # size0 * size1 * size2; blocks per frame
    FLAT: tl.constexpr,                 # frame elements are contiguous: offset = element index
    BLOCK: tl.constexpr,                # elements per program and frame
):
    block = tl.program_id(0)
    first = 1 + tl.program_id(1) * frames_per_range
    last = tl.minimum(first + frames_per_range, num_frames)

    index = block * BLOCK + tl.arange(0, BLOCK)
    mask = index < num_elements
    if FLAT:
        offset = index.to(tl.int64)
    else:
        inner = size1 * size2
        i0 = index // inner
        rest = index % inner
        offset = (i0.to(tl.int64) * stride0 + (rest // size2).to(tl.int64) * stride1
                  + (rest % size2).to(tl.int64) * stride2)

    # The frame pointer advances by stride_t per frame: 64-bit pointer arithmetic, so videos
    # larger than 2**31 bytes need no int64 index products.
    frame_ptr = frames_ptr + (first - 1).to(tl.int64) * stride_t
    prev = tl.load(frame_ptr + offset, mask=mask, other=0).to(tl.int32)
    for t in range(first, last):
        frame_ptr += stride_t
        cur = tl.load(frame_ptr + offset, mask=mask, other=0).to(tl.int32)
        total = tl.sum(tl.abs(cur - prev), axis=0)
        tl.store(partial_ptr + (t - 1) * num_blocks + block, total)
        prev = cur


def launch(frames: torch.Tensor, sizes: list[int], strides: list[int]) -> torch.Tensor:
    """int32 partial sums `[T - 1, blocks]` of |f_t - f_{t-1}| for T >= 2 frames.

    `sizes`/`strides`: a frame as 3 dims (from `saa_scores._frame_dims`), innermost last.
    """
    count = frames.shape[0]
    num_elements = sizes[0] * sizes[1] * sizes[2]
    if num_elements >= 2**31:
        raise ValueError(f"saa_scores: frames of {num_elements} elements each exceed the Triton "
                         "kernel's int32 in-frame indexing (2**31 - 1); use backend='torch'")
    block = min(BLOCK, max(128, next_power_of_2(num_elements)))
    num_blocks = cdiv(num_elements, block)
    pairs = count - 1
    per_range = max(1, (num_blocks * pairs) // TARGET_PROGRAMS, cdiv(pairs, MAX_GRID_Y))
    per_range = min(per_range, pairs)
    partial = torch.empty((pairs, num_blocks), dtype=torch.int32, device=frames.device)
    flat = sizes[0] == 1 and sizes[1] == 1 and strides[2] == 1
    grid = (num_blocks, cdiv(pairs, per_range))
    _saa_scores_kernel[grid](
        frames, partial,
        count, per_range,
        sizes[1], sizes[2],
        frames.stride(0), strides[0], strides[1], strides[2],
        num_elements, num_blocks,
        FLAT=flat, BLOCK=block,
    )
    return partial
