"""Per-token log-probabilities of chosen ids, without a float32 copy of the logits.

`selective_logprobs(logits, ids, temperature=T)[i] = log_softmax(logits[i] / T)[ids[i]]`, the
quantity every GRPO trainer needs for the policy, old-policy and reference log-probs.

Shapes and dtypes: logits `[..., V]` in float32, bfloat16 or float16 (any leading shape, any
strides); ids `[...]` (the leading shape) int64 or int32 → float32 `[...]`. A negative id (the
usual padding value -100 included) gives 0 and a zero gradient row. Differentiable in `logits`;
the gradient comes back in the logits' dtype:
    d out[i] / d logits[i, v] = (onehot(ids[i])[v] - softmax(logits[i] / T)[v]) / T.

Backends:
- "triton" (CUDA): one program per row (1-D grid, so any number of rows), one read of the row
  with an online logsumexp; only the per-row LSE (4 bytes) is saved for backward, which reads
  the row again and writes the gradient without storing the softmax. Bytes moved: forward
  N·V·b (b = bytes per logit), backward 2·N·V·b. An id >= V is not checked (the check would
  cost a device sync): it gives NaN in forward and a gradient row of -softmax·grad/T.
- "torch" (CPU): rows in chunks sized so each float32 temporary stays ≤ 32 MiB, so memory does
  not grow with N·V beyond the gradient itself; ids >= V raise ValueError.
- `selective_logprobs_ref`: the plain-torch spec (float32 log_softmax of everything, then
  gather); it does allocate the float32 copy, and is for reading and testing only.

Batch invariance: every backend computes a row from that row alone with block and chunk sizes
that depend on V only, so a row's value is bit-identical whatever other rows are in the batch.

Leading dims are collapsed into at most two strided dims without copying (so `logits[:, :-1]`
of a `[B, L, V]` tensor is read in place); only layouts that cannot be described that way are
copied, in the logits' own dtype.
"""
from __future__ import annotations

import math

import torch

from ._backend import check_same_device, check_tensor, next_power_of_2, resolve_backend

_OP = "selective_logprobs"
_LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ID_DTYPES = (torch.int64, torch.int32)
# CPU torch path: bytes of one float32 chunk temporary (a chunk holds about two of them).
_CHUNK_BYTES = 32 << 20
# Triton: columns read per loop step; fixed for a given V so that rows are batch-invariant.
# Why 4096 on 8 warps for the H200 (facts from benchmarks/sm90_compile.py): 16 columns per
# thread and step, i.e. two 16-byte loads in bf16 (ld.global.v4), at 32 registers, so 8 programs
# of 8 warps (64 warps, the most an SM holds) are resident per SM with 64 KB of loads in flight
# per SM, above the ~36 KB that 4.8 TB/s at ~1 us of latency needs over 132 SMs. The loop has no
# dot, so num_stages (cp.async pipelining) does not apply; occupancy hides the latency.
_MAX_BLOCK_V = 4096


def selective_logprobs_ref(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The spec in plain torch (allocates a float32 copy of all logits: for tests and reading)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    picked = logp.gather(-1, ids.long().clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(ids >= 0, picked, torch.zeros_like(picked))


def check_temperature(op: str, temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"{op}: temperature must be a float, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{op}: temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def check_ids(op: str, ids: torch.Tensor, lead_shape: torch.Size, lead_name: str, vocab: int, *, bounds: bool) -> None:
    """ids match the leading shape; with bounds=True (host backends), every id < vocab."""
    check_tensor(op, "ids", ids, dtypes=_ID_DTYPES)
    if ids.shape != lead_shape:
        raise ValueError(f"{op}: ids must have the shape of {lead_name}, {tuple(lead_shape)}, got {tuple(ids.shape)}")
    if bounds and ids.numel() > 0:
        top = int(ids.max())
        if top >= vocab:
            raise ValueError(f"{op}: ids must be < vocabulary size {vocab} (negative ids are ignored), got id {top}")


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """`x [..., V]` as a 3-D `[A, B, V]` view of the same memory (a copy only when impossible)."""
    merged: list[list[int]] = []
    for size, stride in zip(x.shape[:-1], x.stride()[:-1]):
        if size == 1:
            continue
        if merged and merged[-1][1] == stride * size:
            merged[-1] = [merged[-1][0] * size, stride]
        else:
            merged.append([size, stride])
    if len(merged) > 2:
        x = x.contiguous()
        return x.view(1, -1, x.shape[-1])
    while len(merged) < 2:
        merged.insert(0, [1, 0])
    (a, sa), (b, sb) = merged
    return x.as_strided((a, b, x.shape[-1]), (sa, sb, x.stride(-1)))


def _block_v(vocab: int) -> int:
    return min(_MAX_BLOCK_V, next_power_of_2(vocab))


def _scaled_fp32(chunk: torch.Tensor, temperature: float) -> torch.Tensor:
    """A float32 view of chunk / temperature: no copy for float32 logits at temperature 1."""
    if chunk.dtype == torch.float32 and temperature == 1.0:
        return chunk
    work = chunk.float() if chunk.dtype != torch.float32 else chunk.clone()
    return work.div_(temperature) if temperature != 1.0 else work


def _torch_forward(x3: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    a, b, vocab = x3.shape
    out = torch.empty(a, b, dtype=torch.float32, device=x3.device)
    step = max(1, _CHUNK_BYTES // (4 * vocab))
    for i in range(a):
        for r0 in range(0, b, step):
            work = _scaled_fp32(x3[i, r0:r0 + step], temperature)
            # log_softmax's last-dim kernel reduces each row on its own: rows are batch-invariant.
            logp = torch.log_softmax(work, dim=-1)
            del work
            idc = ids[i, r0:r0 + step]
            picked = logp.gather(1, idc.clamp(min=0).unsqueeze(1)).squeeze(1)
            out[i, r0:r0 + step] = torch.where(idc >= 0, picked, 0.0)
    return out


def _torch_backward(x3: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor, temperature: float) -> torch.Tensor:
    a, b, vocab = x3.shape
    grad_x = torch.empty(x3.shape, dtype=x3.dtype, device=x3.device)
    scale = torch.where(ids >= 0, grad.float() / temperature, 0.0)
    step = max(1, _CHUNK_BYTES // (4 * vocab))
    for i in range(a):
        for r0 in range(0, b, step):
            work = _scaled_fp32(x3[i, r0:r0 + step], temperature)
            g = torch.softmax(work, dim=-1)
            del work
            g.neg_()
            g.scatter_add_(1, ids[i, r0:r0 + step].clamp(min=0).unsqueeze(1), torch.ones(g.shape[0], 1, device=g.device))
            g.mul_(scale[i, r0:r0 + step].unsqueeze(1))
            grad_x[i, r0:r0 + step] = g
    return grad_x


def _triton_forward(x3: torch.Tensor, ids: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    from ._triton.selective_logprobs import _selective_logprobs_fwd_kernel

    a, b, vocab = x3.shape
    out = torch.empty(a * b, dtype=torch.float32, device=x3.device)
    lse = torch.empty(a * b, dtype=torch.float32, device=x3.device)
    block = _block_v(vocab)
    _selective_logprobs_fwd_kernel[(a * b,)](
        x3, ids, out, lse,
        b, vocab,
        x3.stride(0), x3.stride(1), x3.stride(2),
        temperature,
        BLOCK_V=block, num_warps=8 if block >= 2048 else 4,
    )
    return out.view(a, b), lse.view(a, b)


def _triton_backward(x3, ids, lse, grad, temperature) -> torch.Tensor:
    from ._triton.selective_logprobs import _selective_logprobs_bwd_kernel

    a, b, vocab = x3.shape
    grad_x = torch.empty(x3.shape, dtype=x3.dtype, device=x3.device)
    block = _block_v(vocab)
    _selective_logprobs_bwd_kernel[(a * b,)](
        x3, ids, lse, grad.contiguous(), grad_x,
        b, vocab,
        x3.stride(0), x3.stride(1), x3.stride(2),
        temperature,
        BLOCK_V=block, num_warps=8 if block >= 2048 else 4,
    )
    return grad_x


class SelectiveLogprobsFunction(torch.autograd.Function):
    """logits `[..., V]` and ids `[A, B]` (rows as `as_rows` lays them out) → float32 `[A, B]`."""

    @staticmethod
    def forward(ctx, logits, ids, temperature, backend):
        # as_rows runs here, outside autograd, so the gradient goes to `logits` directly
        # (an as_strided node would allocate and scatter a second full-size gradient).
        x3 = as_rows(logits)
        if backend == "triton":
            out, lse = _triton_forward(x3, ids, temperature)
        else:
            out, lse = _torch_forward(x3, ids, temperature), None
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature, ctx.backend = temperature, backend
        return out

    @staticmethod
    def backward(ctx, grad):
        logits, ids, lse = ctx.saved_tensors
        x3 = as_rows(logits)
        if ctx.backend == "triton":
            grad_x = _triton_backward(x3, ids, lse, grad, ctx.temperature)
        else:
            grad_x = _torch_backward(x3, ids, grad, ctx.temperature)
        return grad_x.view(logits.shape), None, None, None


def selective_logprobs(logits: torch.Tensor, ids: torch.Tensor, *, temperature: float = 1.0,
                       backend: str | None = None) -> torch.Tensor:
    """float32 `log_softmax(logits / temperature)` at `ids`; 0 where an id is negative."""
    check_tensor(_OP, "logits", logits, dtypes=_LOGIT_DTYPES)
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{_OP}: logits must be [..., V] with V >= 1, got shape {tuple(logits.shape)}")
    temperature = check_temperature(_OP, temperature)
    check_same_device(_OP, logits=logits, ids=ids)
    backend = resolve_backend(_OP, logits, backend, numba=False)
    check_ids(_OP, ids, logits.shape[:-1], "logits[..., 0]", logits.shape[-1], bounds=backend != "triton")
    if ids.numel() == 0:
        return logits.sum(-1, dtype=torch.float32) * 0.0  # empty, but still connected to logits
    rows = as_rows(logits).shape[:2]
    out = SelectiveLogprobsFunction.apply(logits, ids.reshape(rows).to(torch.int64).contiguous(), temperature, backend)
    return out.reshape(ids.shape)
