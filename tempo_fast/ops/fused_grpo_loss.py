"""fused_grpo_loss: hidden states to the GRPO loss without ever holding the [N, V] logits.

    loss, stats = fused_grpo_loss(hidden, weight, ids, old_logps, advantages, mask, ...)

equals `grpo_loss(selective_logprobs(hidden @ weight.T + bias, ids, temperature), old_logps,
advantages, mask, ...)` — the way TRL computes it — but the per-token log-probs come from
`fused_linear_logprobs`, which walks the vocabulary in tiles with an online logsumexp and keeps
one float per token (its logsumexp) for backward, where the logit tiles are recomputed.

Shapes: hidden [B, T, H] (the completion positions' last hidden states, i.e. the states that
predict ids), weight [V, H] (the LM head), optional bias [V], ids [B, T] (completion token ids),
old_logps / ref_logps / mask [B, T], advantages [B]. Masked tokens (mask == 0) are scored with
id -1, so padding ids never need to be valid and their rows get no gradient.

Memory: besides inputs and gradients, O(B·T) floats plus the kernel's tile buffers; the torch
reference holds B·T·V float32 logits and their softmax (at B·T = 8192, V = 152064: 5 GB each).
Compute: one vocabulary pass forward, one recomputing pass backward (two GEMMs there), so four
GEMM-equivalents against the reference's three; the trade buys the memory.

Differentiable in hidden, weight and bias. All keyword arguments of `grpo_loss` are accepted and
mean the same; `backend` picks the backend of both stages (see tempo_fast.ops), except that
"numba" runs the log-prob stage with torch, which has no numba kernel.
"""
from __future__ import annotations

import torch

from ._backend import check_same_device, check_tensor
from .fused_linear_logprobs import fused_linear_logprobs
from .grpo_loss import grpo_loss

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def fused_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    ref_logps: torch.Tensor | None = None,
    backend: str | None = None,
    **loss_kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss from hidden states [B, T, H]; returns (loss, stats) as `grpo_loss` does."""
    op = "fused_grpo_loss"
    check_tensor(op, "hidden", hidden, ndim=3, dtypes=_FLOATS)
    check_tensor(op, "weight", weight, ndim=2, dtypes=_FLOATS)
    check_tensor(op, "ids", ids, ndim=2, dtypes=(torch.int64, torch.int32))
    check_tensor(op, "mask", mask, ndim=2)
    batch, length, width = hidden.shape
    if weight.shape[1] != width:
        raise ValueError(f"{op}: weight must be [V, {width}] to match hidden [B, T, {width}], got {tuple(weight.shape)}")
    if tuple(ids.shape) != (batch, length) or tuple(mask.shape) != (batch, length):
        raise ValueError(f"{op}: ids and mask must be [{batch}, {length}] like hidden's first two dims, "
                         f"got ids {tuple(ids.shape)}, mask {tuple(mask.shape)}")
    check_same_device(op, hidden=hidden, weight=weight, ids=ids, mask=mask, advantages=advantages,
                      old_logps=old_logps, ref_logps=ref_logps, bias=bias)

    scored = torch.where(mask.bool(), ids, torch.full_like(ids, -1))
    # The log-prob stage has no numba kernel (torch's chunked GEMMs are faster on CPU).
    logprob_backend = "torch" if backend == "numba" else backend
    logps = fused_linear_logprobs(hidden.reshape(batch * length, width), weight, scored.reshape(-1),
                                  bias=bias, temperature=temperature, backend=logprob_backend)
    return grpo_loss(logps.view(batch, length), old_logps, advantages, mask,
                     ref_logps=ref_logps, backend=backend, **loss_kwargs)
