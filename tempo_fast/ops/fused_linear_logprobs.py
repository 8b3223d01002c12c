"""Per-token log-probabilities straight from hidden states: LM head and log-softmax fused.

`fused_linear_logprobs(hidden, weight, ids, bias=b, temperature=T)` equals
`selective_logprobs(hidden @ weight.T + b, ids, temperature=T)` but never materialises the
`[N, V]` logits (for N = 16k tokens and a 152k vocabulary those are 10 GB in float32).

Shapes and dtypes: hidden `[..., H]` and weight `[V, H]` in one of float32/bfloat16/float16,
bias `[V]` (optional, any of those dtypes), ids `[...]` (hidden's leading shape) int64/int32
→ float32 `[...]`. A negative id gives 0 and no gradient. Differentiable in hidden, weight and
bias; gradients come back in their inputs' dtypes. With d = (onehot(id) - softmax(logits/T))·g/T
per row (g the incoming gradient): grad_hidden = d @ W, grad_weight = dᵀ @ hidden,
grad_bias = Σ_rows d.

Backends:
- "triton" (CUDA): forward on a 2-D grid (row blocks × vocabulary segments of 4096 columns);
  each program computes logit tiles with tensor-core `tl.dot` (fp32 accumulation; fp32 inputs
  use TF32 exactly when `torch.backends.cuda.matmul.allow_tf32` is set) and keeps an online
  logsumexp per row; a small kernel merges the segments in a fixed order. Only the per-row LSE
  is saved. Backward walks the rows in chunks sized to a 128 MiB budget: a kernel recomputes the
  chunk's logit tiles and writes d (in the inputs' dtype), then cuBLAS forms grad_hidden and
  accumulates grad_weight (in the weight's dtype) and grad_bias (float32). Extra memory: the
  chunk buffer (≤ 128 MiB) plus 12 bytes per row per 4096-column segment. An id >= V is not
  checked (a device sync): it gives NaN.
- "torch" (CPU): the same scheme in torch, tiles of 256 rows × up to 32 MiB of float32 logits;
  ids >= V raise ValueError. Rows go through the matmul in fixed 256-row blocks (the last one
  zero-padded) because BLAS sums a row differently for small or ragged row counts. 256 rows keep
  the GEMM efficient (at N=1024, H=256, V=32000 forward+backward: 0.49 s against 3.5 s with
  32-row blocks and 0.40 s for plain torch, which holds the logits); the price is that a call
  with a handful of rows costs as much as one with 256.
- `fused_linear_logprobs_ref`: the plain-torch spec (materialises the logits; for testing).

Batch invariance: tile and block sizes depend on V and H only, never on N, so a row's value is
bit-identical whatever other rows are in the batch.
"""
from __future__ import annotations

import torch

from ._backend import cdiv, check_same_device, check_tensor, resolve_backend
from .selective_logprobs import check_ids, check_temperature, selective_logprobs_ref

_OP = "fused_linear_logprobs"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# CPU torch path: rows per matmul block, and bytes of one float32 logit tile.
_CPU_ROWS = 256
_CPU_TILE_BYTES = 32 << 20
# Triton: vocabulary columns per forward program, and bytes of the backward chunk buffer.
_SEGMENT_TILES = 32
_BWD_CHUNK_BYTES = 128 << 20


def fused_linear_logprobs_ref(hidden, weight, ids, bias=None, temperature: float = 1.0) -> torch.Tensor:
    """The spec in plain torch: logits in float32, then `selective_logprobs_ref`."""
    logits = hidden.float() @ weight.float().T
    if bias is not None:
        logits = logits + bias.float()
    return selective_logprobs_ref(logits, ids, temperature)


# ---------------------------------------------------------------- torch (CPU) implementation

def _cpu_tiles(n_rows: int, vocab: int):
    """(row start, row stop) blocks of _CPU_ROWS and (column start, column stop) tiles."""
    cols = max(1, _CPU_TILE_BYTES // (4 * _CPU_ROWS))
    row_blocks = [(r, min(r + _CPU_ROWS, n_rows)) for r in range(0, n_rows, _CPU_ROWS)]
    col_tiles = [(v, min(v + cols, vocab)) for v in range(0, vocab, cols)]
    return row_blocks, col_tiles


def _padded_rows(h32: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    if r1 - r0 == _CPU_ROWS:
        return h32[r0:r1]
    block = h32.new_zeros(_CPU_ROWS, h32.shape[1])
    block[: r1 - r0] = h32[r0:r1]
    return block


def _logit_tile(h_block, w_tile, b_tile, temperature):
    tile = h_block @ w_tile.T
    if b_tile is not None:
        tile += b_tile
    if temperature != 1.0:
        tile /= temperature
    return tile


def _torch_forward(h2, weight, bias, ids, temperature):
    n, vocab = h2.shape[0], weight.shape[0]
    h32 = h2.float()
    lse = torch.full((n,), float("-inf"), dtype=torch.float32)
    target = torch.zeros(n, dtype=torch.float32)
    row_blocks, col_tiles = _cpu_tiles(n, vocab)
    for v0, v1 in col_tiles:
        w_tile = weight[v0:v1].float()
        b_tile = None if bias is None else bias[v0:v1].float()
        for r0, r1 in row_blocks:
            tile = _logit_tile(_padded_rows(h32, r0, r1), w_tile, b_tile, temperature)
            # reduce the whole padded block: a reduction over fewer rows may sum in another order
            lse[r0:r1] = torch.logaddexp(lse[r0:r1], torch.logsumexp(tile, dim=1)[: r1 - r0])
            tile = tile[: r1 - r0]
            local = ids[r0:r1] - v0
            hit = (local >= 0) & (local < v1 - v0)
            picked = tile.gather(1, torch.where(hit, local, 0).unsqueeze(1)).squeeze(1)
            target[r0:r1] += torch.where(hit, picked, 0.0)
    out = torch.where(ids >= 0, target - lse, 0.0)
    return out, lse


def _torch_backward(h2, weight, bias, ids, lse, grad, temperature, needs):
    n, vocab = h2.shape[0], weight.shape[0]
    h32 = h2.float()
    scale = torch.where(ids >= 0, grad.float() / temperature, 0.0)
    grad_h = torch.zeros(n, h2.shape[1], dtype=torch.float32) if needs[0] else None
    grad_w = torch.empty_like(weight) if needs[1] else None
    grad_b = torch.zeros(vocab, dtype=torch.float32) if needs[2] else None
    row_blocks, col_tiles = _cpu_tiles(n, vocab)
    for v0, v1 in col_tiles:
        w_tile = weight[v0:v1].float()
        b_tile = None if bias is None else bias[v0:v1].float()
        gw_tile = torch.zeros(v1 - v0, h2.shape[1], dtype=torch.float32) if needs[1] else None
        for r0, r1 in row_blocks:
            d = _logit_tile(_padded_rows(h32, r0, r1), w_tile, b_tile, temperature)[: r1 - r0]
            # d = (onehot - softmax) * g / T, built in place in the logit tile
            d.sub_(lse[r0:r1, None]).exp_().neg_()
            local = ids[r0:r1] - v0
            hit = (local >= 0) & (local < v1 - v0)
            d.scatter_add_(1, torch.where(hit, local, 0).unsqueeze(1), hit.float().unsqueeze(1))
            d.mul_(scale[r0:r1, None])
            if grad_h is not None:
                grad_h[r0:r1].addmm_(d, w_tile)
            if gw_tile is not None:
                gw_tile.addmm_(d.T, h32[r0:r1])
            if grad_b is not None:
                grad_b[v0:v1] += d.sum(0)
        if grad_w is not None:
            grad_w[v0:v1] = gw_tile
    return grad_h, grad_w, grad_b


# ---------------------------------------------------------------- Triton implementation

def _triton_blocks(dtype: torch.dtype) -> dict:
    """BLOCK_N/V/K, num_warps, num_stages for the H200 (why: `_triton/fused_linear_logprobs.tile_config`)."""
    from ._triton.fused_linear_logprobs import tile_config
    return tile_config(dtype, _input_precision(dtype))


def _input_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _triton_forward(h2, weight, bias, ids, temperature):
    from ._triton.fused_linear_logprobs import (
        _fused_linear_logprobs_combine_kernel,
        _fused_linear_logprobs_fwd_kernel,
    )

    (n, hdim), vocab = h2.shape, weight.shape[0]
    blocks = _triton_blocks(h2.dtype)
    n_seg = cdiv(vocab, _SEGMENT_TILES * blocks["BLOCK_V"])
    part_m = torch.empty(n_seg, n, dtype=torch.float32, device=h2.device)
    part_s = torch.empty_like(part_m)
    target = torch.empty(n, dtype=torch.float32, device=h2.device)
    _fused_linear_logprobs_fwd_kernel[(cdiv(n, blocks["BLOCK_N"]), n_seg)](
        h2, weight, bias if bias is not None else h2, ids, part_m, part_s, target,
        n, vocab, hdim,
        h2.stride(0), h2.stride(1), weight.stride(0), weight.stride(1),
        temperature,
        HAS_BIAS=bias is not None, SEGMENT_TILES=_SEGMENT_TILES,
        INPUT_PRECISION=_input_precision(h2.dtype), **blocks,
    )
    out = torch.empty(n, dtype=torch.float32, device=h2.device)
    lse = torch.empty_like(out)
    _fused_linear_logprobs_combine_kernel[(cdiv(n, 1024),)](
        part_m, part_s, target, ids, out, lse, n, vocab, n_seg, BLOCK=1024,
    )
    return out, lse


def _triton_backward(h2, weight, bias, ids, lse, grad, temperature, needs):
    from ._triton.fused_linear_logprobs import _fused_linear_logprobs_dlogits_kernel

    (n, hdim), vocab = h2.shape, weight.shape[0]
    blocks = _triton_blocks(h2.dtype)
    chunk = max(1, _BWD_CHUNK_BYTES // (vocab * h2.element_size()) // blocks["BLOCK_N"]) * blocks["BLOCK_N"]
    chunk = min(chunk, n)
    scale = torch.where(ids >= 0, grad.float() / temperature, 0.0)
    d_buf = torch.empty(chunk, vocab, dtype=h2.dtype, device=h2.device)
    grad_h = torch.empty(n, hdim, dtype=h2.dtype, device=h2.device) if needs[0] else None
    grad_w = torch.zeros_like(weight) if needs[1] else None
    grad_b = torch.zeros(vocab, dtype=torch.float32, device=h2.device) if needs[2] else None
    for r0 in range(0, n, chunk):
        rows = min(chunk, n - r0)
        d = d_buf[:rows]
        _fused_linear_logprobs_dlogits_kernel[(cdiv(rows, blocks["BLOCK_N"]), cdiv(vocab, blocks["BLOCK_V"]))](
            h2[r0:], weight, bias if bias is not None else h2, ids[r0:], lse[r0:], scale[r0:], d,
            rows, vocab, hdim,
            h2.stride(0), h2.stride(1), weight.stride(0), weight.stride(1), d.stride(0),
            temperature,
            HAS_BIAS=bias is not None, INPUT_PRECISION=_input_precision(h2.dtype), **blocks,
        )
        if grad_h is not None:
            torch.mm(d, weight, out=grad_h[r0:r0 + rows])
        if grad_w is not None:
            grad_w.addmm_(d.T, h2[r0:r0 + rows])
        if grad_b is not None:
            grad_b += d.sum(0, dtype=torch.float32)
    return grad_h, grad_w, grad_b


class FusedLinearLogprobsFunction(torch.autograd.Function):
    """hidden `[N, H]`, weight `[V, H]`, bias `[V]` or None, ids `[N]` int64 → float32 `[N]`."""

    @staticmethod
    def forward(ctx, h2, weight, bias, ids, temperature, backend):
        fwd = _triton_forward if backend == "triton" else _torch_forward
        out, lse = fwd(h2, weight, bias, ids, temperature)
        ctx.save_for_backward(h2, weight, bias, ids, lse)
        ctx.temperature, ctx.backend = temperature, backend
        return out

    @staticmethod
    def backward(ctx, grad):
        h2, weight, bias, ids, lse = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        bwd = _triton_backward if ctx.backend == "triton" else _torch_backward
        grad_h, grad_w, grad_b = bwd(h2, weight, bias, ids, lse, grad, ctx.temperature, needs)
        if grad_h is not None:
            grad_h = grad_h.to(h2.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def fused_linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor, *,
                          bias: torch.Tensor | None = None, temperature: float = 1.0,
                          backend: str | None = None) -> torch.Tensor:
    """float32 `log_softmax((hidden @ weight.T + bias) / temperature)` at `ids`, without the logits."""
    check_tensor(_OP, "hidden", hidden, dtypes=_DTYPES)
    check_tensor(_OP, "weight", weight, ndim=2, dtypes=_DTYPES)
    if hidden.dim() < 1:
        raise ValueError(f"{_OP}: hidden must be [..., H], got a 0-dim tensor")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"{_OP}: weight must have hidden's dtype {hidden.dtype}, got {weight.dtype}")
    vocab, hdim = weight.shape
    if hidden.shape[-1] != hdim or vocab < 1 or hdim < 1:
        raise ValueError(f"{_OP}: hidden [..., H] and weight [V, H] need one H and V >= 1, "
                         f"got hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}")
    if bias is not None:
        check_tensor(_OP, "bias", bias, ndim=1, dtypes=_DTYPES)
        if bias.shape[0] != vocab:
            raise ValueError(f"{_OP}: bias must be [V] = [{vocab}], got {tuple(bias.shape)}")
    temperature = check_temperature(_OP, temperature)
    check_same_device(_OP, hidden=hidden, weight=weight, ids=ids, bias=bias)
    backend = resolve_backend(_OP, hidden, backend, numba=False)
    check_ids(_OP, ids, hidden.shape[:-1], "hidden[..., 0]", vocab, bounds=backend != "triton")
    h2 = hidden.reshape(-1, hdim)
    if h2.shape[0] == 0:
        return hidden.sum(-1, dtype=torch.float32) * 0.0  # empty, but still connected to hidden
    ids1 = ids.reshape(-1).to(torch.int64).contiguous()
    out = FusedLinearLogprobsFunction.apply(h2, weight, bias, ids1, temperature, backend)
    return out.reshape(ids.shape)
