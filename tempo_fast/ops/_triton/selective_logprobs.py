"""Triton kernels of `tempo_fast.ops.selective_logprobs` (launchers and docs live there).

One program per row on a 1-D grid (rows are never limited by grid dims 1/2). Rows are
addressed as `[A, B, V]` with strides, so strided views are read in place; the row index is
widened to int64 before any pointer arithmetic (N·V often exceeds 2**31).
"""
import triton
import triton.language as tl


@triton.jit
def _selective_logprobs_fwd_kernel(
    # pointers: logits [A, B, V] (any float dtype), ids [A*B] int64, out/lse [A*B] float32
    x_ptr, ids_ptr, out_ptr, lse_ptr,
    # sizes: rows per outer index, vocabulary
    B, V,
    # strides of the logits, in elements
    stride_a, stride_b, stride_v,
    # logits are divided by it, x / T, exactly as in the definition
    temperature,
    # columns per loop step (fixed for a given V: rows are batch-invariant)
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = x_ptr + (row // B) * stride_a + (row % B) * stride_b
    target = tl.load(ids_ptr + row)
    cols = tl.arange(0, BLOCK_V)
    # online logsumexp: running max m and sum s of exp(x - m)
    m = float("-inf")
    s = 0.0
    for start in range(0, V, BLOCK_V):
        offs = start + cols
        x = tl.load(row_ptr + offs * stride_v, mask=offs < V, other=float("-inf")).to(tl.float32) / temperature
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # a row that is all -inf so far keeps m = -inf; shift by 0 then to avoid inf - inf
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift), axis=0)
        m = m_new
    lse = m + tl.log(s)
    valid = (target >= 0) & (target < V)
    x_t = tl.load(row_ptr + tl.where(valid, target, 0) * stride_v, mask=valid, other=0.0).to(tl.float32) / temperature
    out = tl.where(target < 0, 0.0, tl.where(valid, x_t - lse, float("nan")))
    tl.store(out_ptr + row, out)
    tl.store(lse_ptr + row, lse)


@triton.jit
def _selective_logprobs_bwd_kernel(
    # pointers: logits [A, B, V], ids/lse/grad_out [A*B], grad_logits [A*B, V] contiguous
    x_ptr, ids_ptr, lse_ptr, grad_out_ptr, grad_x_ptr,
    # sizes
    B, V,
    # strides of the logits, in elements
    stride_a, stride_b, stride_v,
    temperature,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = x_ptr + (row // B) * stride_a + (row % B) * stride_b
    out_row_ptr = grad_x_ptr + row * V
    target = tl.load(ids_ptr + row)
    lse = tl.load(lse_ptr + row)
    # d out / d x_v = (onehot_v - softmax_v) / T; a negative id has no gradient
    scale = tl.where(target >= 0, tl.load(grad_out_ptr + row) / temperature, 0.0)
    cols = tl.arange(0, BLOCK_V)
    for start in range(0, V, BLOCK_V):
        offs = start + cols
        mask = offs < V
        x = tl.load(row_ptr + offs * stride_v, mask=mask, other=0.0).to(tl.float32) / temperature
        p = tl.exp(x - lse)
        g = (tl.where(offs == target, 1.0, 0.0) - p) * scale
        g = tl.where(target >= 0, g, 0.0)
        tl.store(out_row_ptr + offs, g.to(grad_x_ptr.dtype.element_ty), mask=mask)
