"""Triton kernels of `tempo_fast.ops.fused_linear_logprobs` (launchers and docs live there).

Forward: program (row block, vocabulary segment) computes logit tiles `[BLOCK_N, BLOCK_V]` with
`tl.dot` over H and folds them into a per-row online logsumexp (max m, sum s) for its segment;
the combine kernel merges the segments in order and subtracts. Backward: the dlogits kernel
recomputes the same tiles (same K loop, so the same logits) and writes
(onehot - exp(logit - lse)) · scale, which the host feeds to cuBLAS.
"""
import torch
import triton
import triton.language as tl


def tile_config(dtype: torch.dtype, input_precision: str) -> dict:
    """Tile sizes and launch options of the forward and dlogits kernels (shared: the same K loop
    recomputes bit-identical logits in backward). They depend on dtype and precision only, never
    on N, so rows stay batch-invariant.

    Why these, for the H200 (sm_90a; figures from `python -m benchmarks.sm90_compile`, ptxas -v):
    - Tensor-core dtypes (bf16/fp16, fp32 as TF32): a 128 x 128 logit tile on 8 warps, i.e. two
      warpgroups that each issue m64n128k16 (k8 for TF32) wgmma from shared memory. Per K step a
      program loads (128 + 128) x BLOCK_K operands for 128 x 128 x BLOCK_K multiply-adds: 1.5x less
      L2-to-SM traffic per FLOP than the 64 x 128 tile on one warpgroup used before (two of those
      per SM issue the same wgmma work, so warps per SM stay 8). BLOCK_K is 128 bytes of a row
      (64 bf16, 32 fp32), the widest shared-memory swizzle wgmma reads. 4 stages: 32 KB per stage,
      128 KB of the 227 KB; with one program per SM (208/216 registers x 256 threads) no second
      program hides load latency, so the cp.async pipeline runs 3 K steps ahead (~1 us at the
      ~0.35 us a bf16 K step takes). Larger tiles spill: 128 x 256 and 64 x 256 reach 255 registers
      and spill 24 B in the forward, whose online logsumexp keeps a second tile of exp values live.
    - fp32 IEEE (allow_tf32 off): no tensor cores; the dot is FMA outer products with the
      accumulators in registers, so registers set the tile. 64 x 128 on 4 warps spilled (255
      registers, 48 B of spill stores in the forward). 32 x 128 on 4 warps halves the accumulators
      per thread: forward 206-208 registers, dlogits <= 166, no spill at any tested V, 40 KB
      shared, 2-3 programs per SM. (64 x 128 on 8 warps fits the forward too, but ptxas capped the
      dlogits kernel at 128 registers and spilled 16 B at an odd V.) BLOCK_V stays 128, so the
      forward's vocabulary segments stay 4096 columns.
    """
    if dtype == torch.float32 and input_precision == "ieee":
        return dict(BLOCK_N=32, BLOCK_V=128, BLOCK_K=32, num_warps=4, num_stages=3)
    block_k = 32 if dtype == torch.float32 else 64
    return dict(BLOCK_N=128, BLOCK_V=128, BLOCK_K=block_k, num_warps=8, num_stages=4)


@triton.jit
def _logit_tile(
    h_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask,
    H, stride_hn, stride_hh, stride_wv, stride_wh, temperature,
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """(hidden[rows] @ weight[cols].T + bias[cols]) / T as float32 `[BLOCK_N, BLOCK_V]`."""
    acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
    ks = tl.arange(0, BLOCK_K)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + ks
        k_mask = k < H
        h = tl.load(h_ptr + rows[:, None] * stride_hn + k[None, :] * stride_hh,
                    mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :].to(tl.int64) * stride_wv + k[:, None] * stride_wh,
                    mask=col_mask[None, :] & k_mask[:, None], other=0.0)
        acc = tl.dot(h, w, acc, input_precision=INPUT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return acc / temperature


@triton.jit
def _fused_linear_logprobs_fwd_kernel(
    # pointers: hidden [N, H], weight [V, H], bias [V] (hidden when absent), ids [N] int64,
    # partial max / sum [n_seg, N] float32, target logit [N] float32 (written by one segment)
    h_ptr, w_ptr, b_ptr, ids_ptr, part_m_ptr, part_s_ptr, target_ptr,
    # sizes
    N, V, H,
    # strides, in elements
    stride_hn, stride_hh, stride_wv, stride_wh,
    # logits are divided by it
    temperature,
    # meta: bias present, dot precision, tiles per segment, tile sizes
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr, SEGMENT_TILES: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    seg = tl.program_id(1).to(tl.int64)
    rows = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < N
    ids = tl.load(ids_ptr + rows, mask=row_mask, other=-1)
    v_begin = seg * (SEGMENT_TILES * BLOCK_V)
    v_end = tl.minimum(v_begin + SEGMENT_TILES * BLOCK_V, V)
    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    target = tl.zeros([BLOCK_N], tl.float32)
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < v_end
        x = _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask,
                        H, stride_hn, stride_hh, stride_wv, stride_wh, temperature,
                        HAS_BIAS, INPUT_PRECISION, BLOCK_N, BLOCK_V, BLOCK_K)
        x = tl.where(col_mask[None, :], x, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        # rows that are all -inf so far keep m = -inf; shift by 0 then to avoid inf - inf
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift[:, None]), axis=1)
        m = m_new
        target += tl.sum(tl.where(cols[None, :] == ids[:, None], x, 0.0), axis=1)
    tl.store(part_m_ptr + seg * N + rows, m, mask=row_mask)
    tl.store(part_s_ptr + seg * N + rows, s, mask=row_mask)
    mine = row_mask & (ids >= v_begin) & (ids < v_end)
    tl.store(target_ptr + rows, target, mask=mine)


@triton.jit
def _fused_linear_logprobs_combine_kernel(
    # pointers: partial max / sum [n_seg, N], target [N], ids [N], out / lse [N]
    part_m_ptr, part_s_ptr, target_ptr, ids_ptr, out_ptr, lse_ptr,
    # sizes
    N, V, n_seg,
    BLOCK: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < N
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    for seg in range(0, n_seg):
        # rows past N read m = 0, s = 1, so that no lane takes log(0)
        m_i = tl.load(part_m_ptr + seg * N + rows, mask=mask, other=0.0)
        s_i = tl.load(part_s_ptr + seg * N + rows, mask=mask, other=1.0)
        m_new = tl.maximum(m, m_i)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + s_i * tl.exp(m_i - shift)
        m = m_new
    lse = m + tl.log(s)
    ids = tl.load(ids_ptr + rows, mask=mask, other=-1)
    target = tl.load(target_ptr + rows, mask=mask & (ids >= 0) & (ids < V), other=0.0)
    out = tl.where(ids < 0, 0.0, tl.where(ids < V, target - lse, float("nan")))
    tl.store(out_ptr + rows, out, mask=mask)
    tl.store(lse_ptr + rows, lse, mask=mask)


@triton.jit
def _fused_linear_logprobs_dlogits_kernel(
    # pointers: hidden/ids/lse/scale start at the chunk's first row; d [rows, V] out,
    # scale = grad / T (0 for negative ids)
    h_ptr, w_ptr, b_ptr, ids_ptr, lse_ptr, scale_ptr, d_ptr,
    # sizes: rows in this chunk, vocabulary, hidden
    N, V, H,
    # strides, in elements
    stride_hn, stride_hh, stride_wv, stride_wh, stride_dn,
    temperature,
    HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_mask = rows < N
    col_mask = cols < V
    x = _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask,
                    H, stride_hn, stride_hh, stride_wv, stride_wh, temperature,
                    HAS_BIAS, INPUT_PRECISION, BLOCK_N, BLOCK_V, BLOCK_K)
    ids = tl.load(ids_ptr + rows, mask=row_mask, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    scale = tl.load(scale_ptr + rows, mask=row_mask, other=0.0)
    p = tl.exp(x - lse[:, None])
    d = (tl.where(cols[None, :] == ids[:, None], 1.0, 0.0) - p) * scale[:, None]
    tl.store(d_ptr + rows[:, None] * stride_dn + cols[None, :], d.to(d_ptr.dtype.element_ty),
             mask=row_mask[:, None] & col_mask[None, :])
