"""Triton element-wise kernels of `tempo_fast.ops.fused_grpo_loss`'s CUDA path (the launcher
and its docs live in `tempo_fast/ops/_fused_grpo_chunks.py`).

cuBLAS writes one chunk's raw float32 logits x = hidden @ weight.T; these kernels do the rest of
the chunk between the GEMMs, reading z = (x + bias) / temperature on the fly:
- `_fused_grpo_lse_kernel`: one program per row, an online max / sum over the vocabulary in
  BLOCK_V columns, then lse and the target's log-prob z[id] - lse (0 for a negative id).
- `_fused_grpo_dlogits_kernel`: a 2-D grid (row, column block) writing
  d = (onehot(id) - exp(z - lse)) * coef in d's dtype (the GEMM dtype), where coef is the
  row's d loss / d logit scale. d may be the logits buffer itself (float32 inputs): each element
  is read and written by the same program.
Bytes per logit element: the GEMM writes 4, the lse kernel reads 4, the dlogits kernel reads 4
and writes the element size of d.
"""
import triton
import triton.language as tl


@triton.jit
def _fused_grpo_lse_kernel(
    # pointers: logits [rows, V] float32, bias [V] (logits when absent), ids [rows] int64,
    # out: lse [rows], logp [rows] float32
    x_ptr, b_ptr, ids_ptr, lse_ptr, logp_ptr,
    # sizes and the logits' row stride (elements)
    V, stride_xn,
    inv_temperature,
    HAS_BIAS: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xn
    target_id = tl.load(ids_ptr + row)
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    target = tl.zeros([BLOCK_V], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        inside = cols < V
        z = tl.load(x_row + cols, mask=inside, other=0.0)
        if HAS_BIAS:
            z += tl.load(b_ptr + cols, mask=inside, other=0.0).to(tl.float32)
        z = tl.where(inside, z * inv_temperature, float("-inf"))
        # lane-wise online logsumexp; a lane that has seen only -inf keeps m = -inf (shift by 0)
        m_new = tl.maximum(m, z)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - shift) + tl.exp(z - shift)
        m = m_new
        target += tl.where(cols == target_id, z, 0.0)
    m_row = tl.max(m, axis=0)
    s_row = tl.sum(s * tl.exp(m - m_row), axis=0)
    lse = m_row + tl.log(s_row)
    tl.store(lse_ptr + row, lse)
    # an id >= V is not checked on the host (a device sync): it gives NaN
    logp = tl.where(target_id < V, tl.sum(target, axis=0) - lse, float("nan"))
    tl.store(logp_ptr + row, tl.where(target_id >= 0, logp, 0.0))


@triton.jit
def _fused_grpo_dlogits_kernel(
    # pointers: logits [rows, V] float32, bias [V] (logits when absent), ids / lse / coef [rows],
    # out: d [rows, V] (may alias the logits)
    x_ptr, b_ptr, ids_ptr, lse_ptr, coef_ptr, d_ptr,
    # sizes and row strides (elements)
    V, stride_xn, stride_dn,
    inv_temperature,
    HAS_BIAS: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_V + tl.arange(0, BLOCK_V)
    inside = cols < V
    z = tl.load(x_ptr + row * stride_xn + cols, mask=inside, other=0.0)
    if HAS_BIAS:
        z += tl.load(b_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    z = z * inv_temperature
    target_id = tl.load(ids_ptr + row)
    lse = tl.load(lse_ptr + row)
    coef = tl.load(coef_ptr + row)
    d = (tl.where(cols == target_id, 1.0, 0.0) - tl.exp(z - lse)) * coef
    tl.store(d_ptr + row * stride_dn + cols, d.to(d_ptr.dtype.element_ty), mask=inside)
