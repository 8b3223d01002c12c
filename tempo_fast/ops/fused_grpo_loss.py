"""fused_grpo_loss: hidden states to the GRPO loss and its gradients in three matmuls, without
ever holding the [N, V] logits.

    loss, stats = fused_grpo_loss(hidden, weight, ids, old_logps, advantages, mask, ...)

equals `grpo_loss(selective_logprobs(hidden @ weight.T + bias, ids, temperature), old_logps,
advantages, mask, ...)` — the way TRL computes it — with the same loss and stats.

Shapes: hidden [B, T, H] (the completion positions' last hidden states, i.e. the states that
predict ids), weight [V, H] (the LM head, hidden's dtype), optional bias [V], ids [B, T]
(completion token ids), old_logps / ref_logps / mask [B, T], advantages [B]. Masked tokens
(mask == 0) are dropped before the first matmul: their log-prob is 0, they cost no FLOPs and get
no gradient, and their ids need not be valid.

Design. The loss is known inside the forward, so its gradients are computed there: the
normaliser of every loss type (grpo's per-sequence token counts, bnpo/dapo's token count or
num_items_in_batch, dr_grpo's B x max_completion_length) comes from the mask before the first
chunk; then per chunk of rows (`_fused_grpo_chunks.py`): logits (GEMM 1), lse and log-probs, the
per-token d loss / d logp (ratio, clipping, two-sided delta, k3 KL, normaliser), dlogits in place,
grad_hidden = d @ W (GEMM 2) and grad_weight += d.T @ hidden (GEMM 3, float32 accumulation).
Backward only scales the stored gradients by the incoming gradient; grads are computed only for
the inputs that require them, and none under no_grad (one GEMM). Loss and stats come from
`grpo_loss` on the chunks' log-probs, so they are grpo_loss's numbers.
Sequence-level importance sampling needs a sequence's log-probs before any of its gradients:
chunks then hold whole sequences, which keeps three matmuls while every sequence's scored
tokens fit one chunk (256 rows on CPU, ~2k on CUDA); when one does not, a first forward-only pass
computes all log-probs and the chunked pass recomputes the logits (four matmuls).
FLOPs: 6·n·H·V (n scored tokens) with gradients, 2·n·H·V without. Memory besides inputs and
gradients: one chunk ([256, V] float32 on CPU; ≤ CUDA_CHUNK_BYTES = 2 GiB on CUDA: float32
logits plus d in the input dtype) and O(N) vectors; the CUDA path also keeps a float32 grad_weight
accumulator (4·V·H bytes) until the end of the forward. Not twice differentiable.

Backends (`backend` picks both stages; "numba" runs the chunks with torch):
- torch (CPU; any device): torch matmuls on 256-row blocks, float32 math in place.
- triton (CUDA; CPU only under TRITON_INTERPRET=1): cuBLAS GEMMs (float32-output logits) and two
  Triton element-wise kernels (`_triton/fused_grpo_loss.py`). A Triton `tl.dot` variant is not
  written: nothing has been measured on a GPU yet.
Batch invariance: on CPU a row's log-prob and, for the same d loss / d logp, its grad_hidden row
are bit-identical whatever else is in the batch (fixed 256-row blocks). grad_weight and grad_bias
are sums over rows and depend on the batch, and d loss / d logp depends on it through the
normaliser (except dapo with a fixed num_items_in_batch). cuBLAS picks kernels by shape, so
on CUDA nothing is claimed.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import _fused_grpo_chunks as chunks
from ._backend import check_same_device, check_tensor, resolve_backend
from .fused_linear_logprobs import fused_linear_logprobs_ref
from .grpo_loss import STAT_NAMES, _check, grpo_loss, grpo_loss_ref
from .selective_logprobs import check_ids, check_temperature

_OP = "fused_grpo_loss"
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
CPU_ROWS = 256  # rows per CPU block: the GEMMs' M (see _fused_grpo_chunks.torch_pass)


def fused_grpo_loss_ref(hidden, weight, ids, old_logps, advantages, mask, *, bias=None, temperature=1.0,
                        ref_logps=None, **loss_kwargs):
    """The spec in plain torch: float32 logits, log-probs, `grpo_loss_ref` (autograd throughout)."""
    scored = torch.where(mask.bool(), ids, torch.full_like(ids, -1))
    logps = fused_linear_logprobs_ref(hidden, weight, scored, bias=bias, temperature=temperature)
    return grpo_loss_ref(logps, old_logps, advantages, mask, ref_logps=ref_logps, **loss_kwargs)


def _row_scale(mask, loss_type, num_items_in_batch, max_completion_length):
    """w_b with loss = sum_b w_b sum_t m_bt ptl_bt, from the mask alone (as grpo_loss._finish)."""
    batch, length = mask.shape
    row_tokens = mask.sum(1)
    if loss_type == "grpo":
        return 1.0 / (batch * row_tokens.clamp(min=1.0))
    if loss_type == "dr_grpo":
        size = length if max_completion_length is None else max_completion_length
        return torch.full((batch,), 1.0 / (batch * size), dtype=torch.float32, device=mask.device)
    if loss_type == "dapo" and num_items_in_batch is not None:
        items = torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=mask.device).reshape(())
    else:
        items = row_tokens.sum()
    return (1.0 / items.clamp(min=1.0)).expand(batch)


def _clipped_grad(r, a, lo, hi, delta):
    """d(-min(c1 a, c2 a)) / d log r, ties split in half as torch.minimum does (see grpo_loss)."""
    c2 = r.clamp(lo, hi)
    dc2 = torch.where((r >= lo) & (r <= hi), r, 0.0)
    c1, dc1 = (r, r) if delta is None else (r.clamp(max=delta), torch.where(r <= delta, r, 0.0))
    t1, t2 = c1 * a, c2 * a
    w1 = torch.where(t1 < t2, 1.0, torch.where(t1 == t2, 0.5, 0.0))
    return -(w1 * dc1 + (1.0 - w1) * dc2) * a


def _coefficients(rows, length, old, ref, adv, mask, scale, opts):
    """coef_fn(c0, c1, logp) -> d loss / d logp of scored rows c0:c1 (token index rows[c]).

    old / ref / mask are flat [B*T] float32 (old None: on-policy), adv / scale [B] float32.
    Sequence level: rows c0:c1 must hold whole sequences."""
    lo, hi, delta, beta = 1.0 - opts["epsilon_low"], 1.0 + opts["epsilon_high"], opts["delta"], opts["beta"]
    sequence = opts["importance_sampling_level"] == "sequence"

    def coef_fn(c0, c1, logp):
        tok = rows[c0:c1]
        seq = tok // length
        m = mask[tok]
        log_ratio = torch.zeros_like(logp) if old is None else logp - old[tok]
        if sequence:
            batch = adv.shape[0]
            m_sum = torch.zeros(batch, dtype=torch.float32, device=logp.device).index_add_(0, seq, m)
            lr_sum = torch.zeros_like(m_sum).index_add_(0, seq, m * log_ratio)
            denom = m_sum.clamp(min=1.0)
            per_seq = _clipped_grad(torch.exp(lr_sum / denom), adv, lo, hi, delta) * m_sum / denom
            grad = m * per_seq[seq]
        else:
            grad = m * _clipped_grad(torch.exp(log_ratio), adv[seq], lo, hi, delta)
        if beta != 0.0:
            grad = grad + beta * m * (1.0 - torch.exp(ref[tok] - logp))
        return grad * scale[seq]

    return coef_fn


def _run(h2, weight, bias, ids, old_logps, advantages, mask, ref_logps, temperature, kind, backend, opts, needs):
    """(loss, stats tensor in STAT_NAMES order, grad_h [B*T, H], grad_w, grad_b) in the inputs' dtypes."""
    batch, length = mask.shape
    mask_f = mask.detach().float()
    flat_mask = mask_f.reshape(-1)
    rows = flat_mask.nonzero()[:, 0]  # scored tokens, in order (one device sync)
    h_rows, ids_rows = h2.index_select(0, rows), ids.reshape(-1).index_select(0, rows).to(torch.int64)
    f32 = lambda t: None if t is None else t.detach().float().reshape(-1)  # noqa: E731
    scale = _row_scale(mask_f, opts["loss_type"], opts["num_items_in_batch"], opts["max_completion_length"])
    coef_fn = _coefficients(rows, length, f32(old_logps), f32(ref_logps) if opts["beta"] != 0.0 else None,
                            advantages.detach().float(), flat_mask, scale, opts)
    triton = kind == "triton"
    n = rows.shape[0]
    block = chunks.cuda_chunk_rows(max(n, 1), weight.shape[0], h2.dtype) if triton else CPU_ROWS
    run_pass = chunks.triton_pass if triton else chunks.torch_pass
    plan = chunks.plan_chunks(n, block)
    if opts["importance_sampling_level"] == "sequence" and any(needs):
        counts = flat_mask.view(batch, length).ne(0).sum(1).tolist()
        if max(counts, default=0) <= block:
            plan = chunks.plan_chunks(n, block, counts)
        else:  # a sequence longer than a chunk: all log-probs first, then the chunked gradient pass
            logp = run_pass(h_rows, weight, bias, ids_rows, temperature, plan, None, (False,) * 3, block)[0]
            coef_all = coef_fn(0, n, logp)
            coef_fn = lambda c0, c1, _: coef_all[c0:c1]  # noqa: E731
    logp, g_h, g_w, g_b = run_pass(h_rows, weight, bias, ids_rows, temperature, plan, coef_fn, needs, block)
    logps = torch.zeros(batch * length, dtype=torch.float32, device=h2.device).index_copy_(0, rows, logp)
    loss, stats = grpo_loss(logps.view(batch, length), old_logps, advantages, mask, ref_logps=ref_logps,
                            backend=backend, **opts)
    stats = torch.stack([stats[name] for name in STAT_NAMES if name in stats])
    if g_h is not None:
        g_h = torch.zeros(h2.shape, dtype=h2.dtype, device=h2.device).index_copy_(0, rows, g_h.to(h2.dtype))
    g_w = None if g_w is None else g_w.to(weight.dtype)
    g_b = None if g_b is None else g_b.to(bias.dtype)
    return loss, stats, g_h, g_w, g_b


class FusedGRPOLossFunction(torch.autograd.Function):
    """Forward computes loss, stats and the gradients; backward scales the gradients."""

    @staticmethod
    def forward(ctx, h2, weight, bias, run):
        loss, stats, g_h, g_w, g_b = run(tuple(ctx.needs_input_grad[:3]))
        ctx.save_for_backward(g_h, g_w, g_b)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, grad_stats):
        return tuple(None if g is None else g * grad_loss for g in ctx.saved_tensors) + (None,)


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
    beta: float = 0.0,
    loss_type: str = "grpo",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    delta: float | None = None,
    importance_sampling_level: str = "token",
    num_items_in_batch=None,
    max_completion_length: int | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss from hidden states [B, T, H]; returns (loss, stats) as `grpo_loss` does.

    Keyword arguments after `ref_logps` mean what they mean in `grpo_loss`; `backend` is None
    (triton for CUDA tensors, torch on CPU) or "torch", "triton", "numba" (see the module doc)."""
    check_tensor(_OP, "hidden", hidden, ndim=3, dtypes=_FLOATS)
    check_tensor(_OP, "weight", weight, ndim=2, dtypes=_FLOATS)
    check_tensor(_OP, "ids", ids, ndim=2, dtypes=(torch.int64, torch.int32))
    check_tensor(_OP, "mask", mask, ndim=2)
    batch, length, width = hidden.shape
    if weight.dtype != hidden.dtype:
        raise TypeError(f"{_OP}: weight must have hidden's dtype {hidden.dtype}, got {weight.dtype}")
    if weight.shape[1] != width or weight.shape[0] < 1:
        raise ValueError(f"{_OP}: weight must be [V, {width}] to match hidden [B, T, {width}], got {tuple(weight.shape)}")
    if tuple(ids.shape) != (batch, length) or tuple(mask.shape) != (batch, length):
        raise ValueError(f"{_OP}: ids and mask must be [{batch}, {length}] like hidden's first two dims, "
                         f"got ids {tuple(ids.shape)}, mask {tuple(mask.shape)}")
    if bias is not None:
        check_tensor(_OP, "bias", bias, ndim=1, dtypes=_FLOATS)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"{_OP}: bias must be [V] = [{weight.shape[0]}], got {tuple(bias.shape)}")
    temperature = check_temperature(_OP, temperature)
    check_same_device(_OP, hidden=hidden, weight=weight, ids=ids, mask=mask, advantages=advantages,
                      old_logps=old_logps, ref_logps=ref_logps, bias=bias)
    _check(mask.new_empty(mask.shape, dtype=torch.float32), old_logps, advantages, mask, ref_logps, beta,
           loss_type, epsilon_low, epsilon_high, delta, importance_sampling_level, num_items_in_batch,
           max_completion_length)
    kind = resolve_backend(_OP, hidden, backend)
    scored = torch.where(mask.bool(), ids, torch.full_like(ids, -1))
    check_ids(_OP, scored, mask.shape, "mask", weight.shape[0], bounds=kind != "triton")
    opts = dict(beta=float(beta), loss_type=loss_type, epsilon_low=float(epsilon_low),
                epsilon_high=float(epsilon_high), delta=None if delta is None else float(delta),
                importance_sampling_level=importance_sampling_level, num_items_in_batch=num_items_in_batch,
                max_completion_length=max_completion_length)
    h2 = hidden.reshape(batch * length, width)

    def run(needs):
        return _run(h2, weight, bias, scored, old_logps, advantages, mask, ref_logps if beta != 0.0 else None,
                    temperature, kind, backend, opts, needs)

    leaves = (hidden, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in leaves):
        loss, stats = FusedGRPOLossFunction.apply(h2, weight, bias, run)
    else:
        loss, stats = run((False, False, False))[:2]
    names = STAT_NAMES if beta != 0.0 else STAT_NAMES[:-1]
    return loss, {name: stats[i] for i, name in enumerate(names)}
