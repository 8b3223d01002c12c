"""The chunked passes of `fused_grpo_loss`: per row chunk, one GEMM for the logits, the chunk's
log-probs, the GRPO gradient per token (from `coef_fn`), dlogits in place, and two GEMMs for
grad_hidden and grad_weight. The [rows, V] chunk buffer is reused; nothing of size N x V exists.

Both passes take the scored rows only (masked tokens are dropped before: their log-prob is 0
and they get no gradient) and the same arguments:
    h [n, H], weight [V, H], bias [V] or None, ids [n] int64 (all in [0, V)), temperature,
    chunks: [(c0, c1)] row ranges, coef_fn(c0, c1, logp) -> d loss / d logp for those rows,
    needs: (grad hidden, grad weight, grad bias); all False computes the log-probs only.
and return (logp float32 [n], grad_h [n, H], grad_w [V, H], grad_b [V] float32), grads None
where not needed.

- `torch_pass` (CPU; any device): float32 math. Rows go through the GEMMs in blocks of exactly
  `rows` rows (the last zero-padded: BLAS sums a row differently for other row counts), so a
  row's log-prob and its grad_hidden row, given its coefficient, do not depend on the rest of
  the batch. In place in the block buffer: logits (addmm), max-shift and exp, then
  d = (onehot - p) * coef; grad_h = d @ W (mm into a buffer), grad_w += d.T @ h (addmm_).
- `triton_pass` (CUDA, or Triton's interpreter): cuBLAS float32-output GEMM for the logits
  (bf16/fp16 inputs: `torch.mm(..., out_dtype=torch.float32)`), the element-wise Triton kernels
  of `_triton/fused_grpo_loss.py` for lse / log-prob and for d (written in the input dtype for
  the two cuBLAS gradient GEMMs at full rate), grad_w accumulated in float32 and cast once.
"""
from __future__ import annotations

import torch

from ._backend import cdiv

# CUDA: bytes of the chunk buffers (float32 logits, plus d in the input dtype when not float32).
CUDA_CHUNK_BYTES = 2 << 30
_LSE_BLOCK_V = 1024
_DLOGITS_BLOCK_V = 1024


def plan_chunks(n: int, rows: int, seq_counts: list[int] | None = None) -> list[tuple[int, int]]:
    """Row ranges of at most `rows` rows; with seq_counts (rows per sequence, in order), every
    range holds whole sequences (each count must be <= rows)."""
    if seq_counts is None:
        return [(c, min(c + rows, n)) for c in range(0, n, rows)]
    chunks, start, size = [], 0, 0
    for count in seq_counts:
        if size + count > rows and size > 0:
            chunks.append((start, start + size))
            start, size = start + size, 0
        size += count
    if size:
        chunks.append((start, start + size))
    return chunks


def cuda_chunk_rows(n: int, vocab: int, dtype: torch.dtype) -> int:
    """Rows per CUDA chunk: within CUDA_CHUNK_BYTES, balanced over the chunks, a multiple of 128."""
    per_row = vocab * (4 + (0 if dtype == torch.float32 else torch.finfo(dtype).bits // 8))
    most = max(128, CUDA_CHUNK_BYTES // per_row // 128 * 128)
    return min(most, cdiv(cdiv(n, cdiv(n, most)), 128) * 128)


def torch_pass(h, weight, bias, ids, temperature, chunks, coef_fn, needs, rows):
    n, width = h.shape
    vocab, dev, f32 = weight.shape[0], h.device, torch.float32
    h32, w32 = h.float(), weight.float()
    b32 = None if bias is None else bias.float()
    want = any(needs)
    logp = torch.empty(n, dtype=f32, device=dev)
    grad_h = torch.empty(n, width, dtype=f32, device=dev) if needs[0] else None
    grad_w = torch.zeros(vocab, width, dtype=f32, device=dev) if needs[1] else None
    grad_b = torch.zeros(vocab, dtype=f32, device=dev) if needs[2] else None
    buf = torch.empty(rows, vocab, dtype=f32, device=dev)
    block = torch.zeros(rows, width, dtype=f32, device=dev)
    gh_block = torch.empty(rows, width, dtype=f32, device=dev) if needs[0] else None
    scale = torch.zeros(rows, 1, dtype=f32, device=dev)
    for c0, c1 in chunks:
        k = c1 - c0
        block[:k] = h32[c0:c1]
        if k < rows:
            block[k:] = 0.0
        if b32 is None:
            torch.mm(block, w32.T, out=buf)
        else:
            torch.addmm(b32, block, w32.T, out=buf)
        if temperature != 1.0:
            buf.div_(temperature)
        idk = ids[c0:c1, None]
        target = buf[:k].gather(1, idk)[:, 0]
        peak = buf.amax(1, keepdim=True)
        buf.sub_(peak).exp_()  # buf = exp(z - max): the softmax's numerator
        total = buf.sum(1)
        lp = target - peak[:k, 0] - total[:k].log()
        logp[c0:c1] = lp
        if not want:
            continue
        coef = coef_fn(c0, c1, lp) / temperature
        scale[:k, 0] = -coef / total[:k]
        scale[k:] = 0.0
        buf.mul_(scale)  # -p * coef; padded rows have coef 0
        buf[:k].scatter_add_(1, idk, coef[:, None])  # + onehot * coef
        if gh_block is not None:
            torch.mm(buf, w32, out=gh_block)
            grad_h[c0:c1] = gh_block[:k]
        if grad_w is not None:
            grad_w.addmm_(buf.T, block)
        if grad_b is not None:
            grad_b += buf.sum(0)
    return logp, grad_h, grad_w, grad_b


def _mm_f32(a, b, out):
    """out (float32) = a @ b, at the GEMM rate of a's dtype."""
    if a.dtype == torch.float32:
        return torch.mm(a, b, out=out)
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32, out=out)
    return torch.mm(a.float(), b.float(), out=out)  # the interpreter on CPU: no mixed-dtype mm there


def _addmm_f32(acc, a, b):
    """acc (float32) += a @ b."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif a.is_cuda:
        try:
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
        except RuntimeError:  # builds whose addmm.dtype wants self in the input dtype
            acc += torch.mm(a, b, out_dtype=torch.float32)
    else:
        acc.addmm_(a.float(), b.float())


def triton_pass(h, weight, bias, ids, temperature, chunks, coef_fn, needs, rows):
    from ._triton.fused_grpo_loss import _fused_grpo_dlogits_kernel, _fused_grpo_lse_kernel

    n, width = h.shape
    vocab, dev, f32 = weight.shape[0], h.device, torch.float32
    want = any(needs)
    inv_t = 1.0 / temperature
    logp = torch.empty(n, dtype=f32, device=dev)
    lse = torch.empty(rows, dtype=f32, device=dev)
    x = torch.empty(rows, vocab, dtype=f32, device=dev)
    d = x if h.dtype == f32 or not want else torch.empty(rows, vocab, dtype=h.dtype, device=dev)
    grad_h = torch.empty(n, width, dtype=h.dtype, device=dev) if needs[0] else None
    grad_w = torch.zeros(vocab, width, dtype=f32, device=dev) if needs[1] else None
    grad_b = torch.zeros(vocab, dtype=f32, device=dev) if needs[2] else None
    b_arg = bias if bias is not None else x
    for c0, c1 in chunks:
        k = c1 - c0
        xk, dk = x[:k], d[:k]
        _mm_f32(h[c0:c1], weight.T, xk)
        _fused_grpo_lse_kernel[(k,)](
            xk, b_arg, ids[c0:c1], lse, logp[c0:c1], vocab, xk.stride(0), inv_t,
            HAS_BIAS=bias is not None, BLOCK_V=_LSE_BLOCK_V, num_warps=4,
        )
        if not want:
            continue
        coef = (coef_fn(c0, c1, logp[c0:c1]) * inv_t).contiguous()
        _fused_grpo_dlogits_kernel[(k, cdiv(vocab, _DLOGITS_BLOCK_V))](
            xk, b_arg, ids[c0:c1], lse, coef, dk, vocab, xk.stride(0), dk.stride(0), inv_t,
            HAS_BIAS=bias is not None, BLOCK_V=_DLOGITS_BLOCK_V, num_warps=4,
        )
        if grad_h is not None:
            torch.mm(dk, weight, out=grad_h[c0:c1])
        if grad_w is not None:
            _addmm_f32(grad_w, dk.T, h[c0:c1])
        if grad_b is not None:
            grad_b += dk.sum(0, dtype=f32)
    return logp, grad_h, grad_w, grad_b
