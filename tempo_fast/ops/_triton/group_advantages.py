"""Triton kernel and launcher for `tempo_fast.ops.group_advantages` (semantics there).

One program handles `BLOCK_G` consecutive groups as a `[BLOCK_G, BLOCK_S]` tile, looping over
groups longer than `BLOCK_S`: pass 1 counts and sums the non-NaN rewards, pass 2 sums the
squared deviations (scale="group" only; two passes rather than one-pass moments, so that large
rewards with a small spread keep their precision), pass 3 writes the advantages. Small groups
are packed several per program; the grid is 1-D over blocks of groups, so any N works.
"""
import torch
import triton
import triton.language as tl

from .._backend import cdiv, next_power_of_2

SCALE_CODES = {"none": 0, "group": 1, "batch": 2}
ELEMENTS_PER_PROGRAM = 2048  # tile size: enough work per program, small enough for registers
MAX_BLOCK_S = 1024  # longer groups loop over chunks of this many rewards
# Why, for the H200: a batch has 10^3-10^5 rewards (a few hundred KB), so the op is one launch
# of a few programs and launch-bound; 2048 rewards on 4 warps is 16 per thread, 32-194 registers
# with no spill for every group size (benchmarks/sm90_compile.py), and 3 passes re-read the tile
# from L1/L2 rather than keeping 3 copies live in registers.


@triton.jit
def _group_advantages_kernel(
    r_ptr, out_ptr, batch_std_ptr,  # rewards [N] (strided, any float), out float32 [N], batch std float32 [1]
    num_groups, group_size,  # sizes
    stride_r,  # element stride of the rewards
    eps,  # added to the std
    SCALE: tl.constexpr,  # 0 none, 1 group, 2 batch
    BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr,  # tile: groups x rewards per group
):
    pid = tl.program_id(0).to(tl.int64)
    groups = pid * BLOCK_G + tl.arange(0, BLOCK_G)
    group_ok = groups < num_groups
    start = groups * group_size
    total = tl.zeros([BLOCK_G], dtype=tl.float32)
    count = tl.zeros([BLOCK_G], dtype=tl.float32)
    for s0 in range(0, group_size, BLOCK_S):
        cols = s0 + tl.arange(0, BLOCK_S)
        inside = group_ok[:, None] & (cols[None, :] < group_size)
        idx = start[:, None] + cols[None, :]
        r = tl.load(r_ptr + idx * stride_r, mask=inside, other=float("nan")).to(tl.float32)
        valid = r == r
        total += tl.sum(tl.where(valid, r, 0.0), axis=1)
        count += tl.sum(valid.to(tl.float32), axis=1)
    mean = total / tl.maximum(count, 1.0)
    if SCALE == 1:
        sq = tl.zeros([BLOCK_G], dtype=tl.float32)
        for s0 in range(0, group_size, BLOCK_S):
            cols = s0 + tl.arange(0, BLOCK_S)
            inside = group_ok[:, None] & (cols[None, :] < group_size)
            idx = start[:, None] + cols[None, :]
            r = tl.load(r_ptr + idx * stride_r, mask=inside, other=float("nan")).to(tl.float32)
            dev = tl.where(r == r, r - mean[:, None], 0.0)
            sq += tl.sum(dev * dev, axis=1)
        denom = tl.sqrt(sq / tl.maximum(count - 1.0, 1.0)) + eps
    elif SCALE == 2:
        denom = tl.zeros([BLOCK_G], dtype=tl.float32) + (tl.load(batch_std_ptr) + eps)
    else:
        denom = tl.full([BLOCK_G], 1.0, dtype=tl.float32)
    for s0 in range(0, group_size, BLOCK_S):
        cols = s0 + tl.arange(0, BLOCK_S)
        inside = group_ok[:, None] & (cols[None, :] < group_size)
        idx = start[:, None] + cols[None, :]
        r = tl.load(r_ptr + idx * stride_r, mask=inside, other=float("nan")).to(tl.float32)
        adv = tl.where(r == r, (r - mean[:, None]) / denom[:, None], 0.0)
        tl.store(out_ptr + idx, adv, mask=inside)


def group_advantages_triton(rewards: torch.Tensor, group_size: int, *, scale: str, eps: float) -> torch.Tensor:
    """Launch the kernel on validated, non-empty `rewards`; returns float32 `[N]`."""
    n = rewards.numel()
    out = torch.empty(n, dtype=torch.float32, device=rewards.device)
    num_groups = n // group_size
    block_s = min(next_power_of_2(group_size), MAX_BLOCK_S)
    block_g = max(1, min(ELEMENTS_PER_PROGRAM // block_s, next_power_of_2(num_groups)))
    if scale == "batch":
        from ..group_advantages import batch_std
        std = batch_std(rewards).reshape(1)
    else:
        std = out  # never read
    grid = (cdiv(num_groups, block_g),)
    _group_advantages_kernel[grid](
        rewards, out, std,
        num_groups, group_size,
        rewards.stride(0),
        eps,
        SCALE=SCALE_CODES[scale], BLOCK_G=block_g, BLOCK_S=block_s,
        num_warps=4,
    )
    return out
