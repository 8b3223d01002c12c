"""numba kernel of `saa_scores` (CPU): per-(frame, split) int64 sums of |f_t - f_{t-1}|.

The frames arrive as the flat uint8 buffer they live in plus their strides: a frame is
`[D0, D1, D2]` with element (i0, i1, k) at `t*stride_t + i0*s0 + i1*s1 + k*s2` (the launcher
orders the dimensions so that s2 is the smallest stride, usually 1). Rows of D2 elements are cut
into pieces of at most PIECE elements, whose int32 sums are exact; when s2 == 1 a piece is a
contiguous slice, which LLVM vectorises (about 10x faster than an indexed strided loop).

A frame is cut into splits of about SPLIT_ELEMENTS elements; the work items, (frame range,
split) pairs, run in parallel (serially for inputs below SERIAL_ELEMENTS). An item walks consecutive frames of its range over one split, so
the previous frame's split is still in cache when it is subtracted: each frame is read from
memory about once.
"""
from __future__ import annotations

import numba
import numpy as np

# Elements summed in int32 before adding to the int64 total (255 * PIECE < 2**31).
PIECE = 1 << 16
# Elements of one frame per work item: small enough that the previous frame's split stays in L2.
SPLIT_ELEMENTS = 1 << 18
# Work items per thread the launcher aims for, so uneven items still balance.
ITEMS_PER_THREAD = 8
# Below this many elements in all frames one thread does it all: starting the thread pool costs
# more than it saves, and a pool sharing busy cores waits on its slowest thread.
SERIAL_ELEMENTS = 1 << 23


@numba.njit(cache=True, nogil=True, inline="always")
def _sad_contiguous(cur, prev):
    acc = np.int32(0)
    for k in range(cur.shape[0]):
        acc += abs(np.int32(cur[k]) - np.int32(prev[k]))
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _sad_strided(buf, cur, prev, length, step):
    acc = np.int32(0)
    for k in range(length):
        acc += abs(np.int32(buf[cur + k * step]) - np.int32(buf[prev + k * step]))
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _item(buf, count, stride_t, d1, d2, s0, s1, s2, num_units, pieces,
          per_range, units_per_split, num_splits, item, out):
    """One work item: frames of range item // num_splits over split item % num_splits."""
    r = item // num_splits
    s = item % num_splits
    first = 1 + r * per_range
    last = min(first + per_range, count)
    u_first = s * units_per_split
    u_last = min(u_first + units_per_split, num_units)
    for t in range(first, last):
        total = np.int64(0)
        for u in range(u_first, u_last):
            row = u // pieces
            k_first = (u % pieces) * PIECE
            length = min(PIECE, d2 - k_first)
            cur = t * stride_t + (row // d1) * s0 + (row % d1) * s1 + k_first * s2
            prev = cur - stride_t
            if s2 == 1:
                total += _sad_contiguous(buf[cur:cur + length], buf[prev:prev + length])
            else:
                total += _sad_strided(buf, cur, prev, length, s2)
        out[t - 1, s] = total


@numba.njit(parallel=True, cache=True, nogil=True)
def _kernel_parallel(buf, count, stride_t, d1, d2, s0, s1, s2, num_units, pieces,
                     per_range, units_per_split, num_splits, num_items, out):
    for item in numba.prange(num_items):
        _item(buf, count, stride_t, d1, d2, s0, s1, s2, num_units, pieces,
              per_range, units_per_split, num_splits, item, out)


@numba.njit(cache=True, nogil=True)
def _kernel_serial(buf, count, stride_t, d1, d2, s0, s1, s2, num_units, pieces,
                   per_range, units_per_split, num_splits, num_items, out):
    for item in range(num_items):
        _item(buf, count, stride_t, d1, d2, s0, s1, s2, num_units, pieces,
              per_range, units_per_split, num_splits, item, out)


def frame_abs_diff_sums(buf: np.ndarray, count: int, stride_t: int, sizes: list[int],
                        strides: list[int], num_threads: int) -> np.ndarray:
    """int64 `[count - 1, splits]` partial sums of |f_t - f_{t-1}| over `count` >= 2 frames.

    `buf`: 1-D uint8 array starting at frame 0's first element; `sizes`/`strides`: a frame as
    3 dims (D0, D1, D2) in elements, the smallest stride last.
    """
    d0, d1, d2 = sizes
    pieces = -(-d2 // PIECE)
    num_units = d0 * d1 * pieces
    units_per_split = max(1, SPLIT_ELEMENTS // min(d2, PIECE))
    num_splits = -(-num_units // units_per_split)
    pairs = count - 1
    wanted = ITEMS_PER_THREAD * max(1, num_threads)
    per_range = pairs if num_splits >= wanted else max(1, (pairs * num_splits) // wanted)
    num_items = -(-pairs // per_range) * num_splits
    out = np.empty((pairs, num_splits), dtype=np.int64)
    kernel = _kernel_serial if count * d0 * d1 * d2 < SERIAL_ELEMENTS else _kernel_parallel
    kernel(buf, count, stride_t, d1, d2, strides[0], strides[1], strides[2], num_units, pieces,
           per_range, units_per_split, num_splits, num_items, out)
    return out
