"""The clipped-ratio GRPO loss on per-token log-probs, with TRL GRPOTrainer's exact semantics.

Inputs. `logps`, `old_logps`, `ref_logps`, `mask`: `[B, T]` per-token log-probs of the sampled
completion under the policy being trained, the policy that sampled it, and the frozen
reference; `mask` (bool, int or float; used as a multiplicative weight, like TRL) is 1 on real
completion tokens. `advantages`: `[B]`. Float inputs may be fp16, bf16, fp32 or fp64; all math is
fp32; the loss and stats are fp32 0-dim tensors; the gradient has `logps`' dtype. Only `logps`
gets a gradient: old/ref log-probs, advantages and mask are constants (TRL computes them under
no_grad). `old_logps=None` means on-policy: old = logps.detach().

Per token (TRL 1.16.0 `GRPOTrainer._compute_loss`, loss types grpo/bnpo/dr_grpo/dapo):
    log_w = logp - old                         (importance_sampling_level="token")
    log_w = sum_t(m (logp - old)) / max(sum_t m, 1)   per sequence ("sequence", GSPO)
    r  = exp(log_w);  c2 = clamp(r, 1 - epsilon_low, 1 + epsilon_high)
    c1 = min(r, delta) if delta is not None else r          (two-sided clipping)
    per_token_loss = -min(c1 A, c2 A) + beta kl,  kl = exp(ref - logp) - (ref - logp) - 1
and the masked sum S = sum_{b,t} m per_token_loss is normalised by loss type:
    grpo: mean_b(sum_t m ptl / max(sum_t m, 1));  bnpo: S / max(sum m, 1);
    dr_grpo: S / (B max_completion_length), default T;  dapo: S / max(num_items_in_batch, 1),
    default sum m (TRL's num_items_in_batch rescaled to one micro-batch and process).
TRL's further division by the gradient-accumulation steps is the caller's to apply.
At a tie of the min (r inside the clip range), the gradient follows torch.minimum (half to each
side, which sums to the unclipped gradient).

Stats (detached fp32 0-dim): "clip_low", "clip_high", "clip_region" (TRL's clip_ratio/low_mean,
high_mean, region_mean: c1 < 1 - eps_low with A < 0; c1 > 1 + eps_high with A > 0; either),
"ratio" (r, before the delta clamp), and "kl" when beta != 0. As in TRL, token-level means
are over masked tokens (sum(x m) / max(sum m, 1)), sequence-level ones over the B sequences,
and kl is always token-level. (TRL tells the levels apart by the tensor's shape, so for T == 1
it averages token-level stats over all B sequences, masked or not; here they stay masked.)

Backends. torch (`grpo_loss_ref` in fp32 with autograd: ~25 elementwise ops forward and as
many backward), Triton (`_triton/grpo_loss.py`: one fused kernel, one program per sequence
looping over T, that writes the per-token gradient during the forward; backward is a single
scale by grad_output) and numba (`_numba/grpo_loss.py`: the same design as a CPU loop).
backend=None on CPU picks numba up to B*T = NUMBA_MAX_TOKENS and torch above, from this
measurement (shared 2-core CPU, fp32, beta=0.04, forward+backward, median of 30, numba vs
torch): 8x256 0.11 ms vs 0.21 ms; 16x1024 0.19-0.30 ms vs 0.25-16 ms (torch's figure varied
with load); 64x2048 sequence-level 1.6-1.8 ms vs 1.2-1.3 ms. Bytes moved by the Triton
forward per token: logps, old, ref (beta != 0), mask read once (twice for sequence-level IS),
fp32 gradient written; backward reads it and writes the gradient once.
"""
from __future__ import annotations

import torch

from ._backend import check_same_device, check_tensor, resolve_backend

OP = "grpo_loss"
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IS_LEVELS = ("token", "sequence")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MASK_DTYPES = FLOAT_DTYPES + (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
STAT_NAMES = ("clip_low", "clip_high", "clip_region", "ratio", "kl")
NUMBA_MAX_TOKENS = 1 << 15  # above this many B*T elements torch's vectorised ops beat the numba loop on CPU


def grpo_loss_ref(logps, old_logps, advantages, mask, *, ref_logps=None, beta=0.0, loss_type="grpo",
                  epsilon_low=0.2, epsilon_high=0.2, delta=None, importance_sampling_level="token",
                  num_items_in_batch=None, max_completion_length=None):
    """Plain-torch GRPO loss (the spec), differentiable in `logps` by autograd; validates nothing."""
    logps = logps.float()
    old = logps.detach() if old_logps is None else old_logps.detach().float()
    adv = advantages.detach().float().unsqueeze(1)
    mask = mask.detach().float()
    tokens = mask.sum()
    log_ratio = logps - old
    if importance_sampling_level == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    ratio = torch.exp(log_w)
    coef_2 = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    coef_1 = ratio if delta is None else torch.clamp(ratio, max=delta)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        diff = ref_logps.detach().float() - logps
        kl = torch.exp(diff) - diff - 1
        per_token_loss = per_token_loss + beta * kl
    masked = per_token_loss * mask
    if loss_type == "grpo":
        loss = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = masked.sum() / tokens.clamp(min=1.0)
    elif loss_type == "dr_grpo":
        length = logps.shape[1] if max_completion_length is None else max_completion_length
        loss = masked.sum() / (logps.shape[0] * length)
    else:
        items = tokens if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=torch.float32,
                                                                          device=logps.device)
        loss = masked.sum() / items.clamp(min=1.0)

    def mean(x, per_sequence=importance_sampling_level == "sequence"):
        # TRL's global_masked_mean on one process, told the level rather than guessing it from x's shape
        if per_sequence:
            return x.float().mean()
        return (x.float() * mask).sum() / tokens.clamp(min=1.0)

    with torch.no_grad():
        low = (coef_1 < 1 - epsilon_low) & (adv < 0)
        high = (coef_1 > 1 + epsilon_high) & (adv > 0)
        stats = {"clip_low": mean(low), "clip_high": mean(high),
                 "clip_region": mean(low | high), "ratio": mean(ratio.detach())}
        if beta != 0.0:
            stats["kl"] = mean(kl.detach(), per_sequence=False)
    return loss, stats


def _check(logps, old_logps, advantages, mask, ref_logps, beta, loss_type, epsilon_low, epsilon_high, delta,
           importance_sampling_level, num_items_in_batch, max_completion_length) -> None:
    check_tensor(OP, "logps", logps, ndim=2, dtypes=FLOAT_DTYPES)
    shape = tuple(logps.shape)
    for name, t in (("old_logps", old_logps), ("ref_logps", ref_logps)):
        if t is not None:
            check_tensor(OP, name, t, ndim=2, dtypes=FLOAT_DTYPES)
            if tuple(t.shape) != shape:
                raise ValueError(f"{OP}: {name} must have the shape of logps {shape}, got {tuple(t.shape)}")
    check_tensor(OP, "mask", mask, ndim=2, dtypes=MASK_DTYPES)
    if tuple(mask.shape) != shape:
        raise ValueError(f"{OP}: mask must have the shape of logps {shape}, got {tuple(mask.shape)}")
    check_tensor(OP, "advantages", advantages, ndim=1, dtypes=FLOAT_DTYPES)
    if advantages.shape[0] != shape[0]:
        raise ValueError(f"{OP}: advantages must have shape ({shape[0]},) (one per sequence of logps {shape}), "
                         f"got {tuple(advantages.shape)}")
    check_same_device(OP, logps=logps, old_logps=old_logps, advantages=advantages, mask=mask, ref_logps=ref_logps)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"{OP}: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if importance_sampling_level not in IS_LEVELS:
        raise ValueError(f"{OP}: importance_sampling_level must be one of {IS_LEVELS}, "
                         f"got {importance_sampling_level!r}")
    if not isinstance(beta, (int, float)) or beta < 0:
        raise ValueError(f"{OP}: beta must be a non-negative number, got {beta!r}")
    if beta != 0.0 and ref_logps is None:
        raise ValueError(f"{OP}: beta={beta} needs ref_logps (the reference model's per-token log-probs)")
    for name, eps in (("epsilon_low", epsilon_low), ("epsilon_high", epsilon_high)):
        if not isinstance(eps, (int, float)) or eps < 0:
            raise ValueError(f"{OP}: {name} must be a non-negative number, got {eps!r}")
    if delta is not None and (not isinstance(delta, (int, float)) or delta <= 0):
        raise ValueError(f"{OP}: delta must be None or a positive number (TRL recommends > 1 + epsilon_high), "
                         f"got {delta!r}")
    if max_completion_length is not None and (isinstance(max_completion_length, bool)
                                              or not isinstance(max_completion_length, int)
                                              or max_completion_length < 1):
        raise ValueError(f"{OP}: max_completion_length must be None or a positive int, got {max_completion_length!r}")
    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            if num_items_in_batch.numel() != 1:
                raise ValueError(f"{OP}: num_items_in_batch must be a number or a one-element tensor, "
                                 f"got shape {tuple(num_items_in_batch.shape)}")
        elif isinstance(num_items_in_batch, bool) or not isinstance(num_items_in_batch, (int, float)):
            raise TypeError(f"{OP}: num_items_in_batch must be a number or a tensor, "
                            f"got {type(num_items_in_batch).__name__}")


def _finish(partials, B, T, device, *, has_ref, loss_type, sequence, num_items_in_batch, max_completion_length):
    """Loss, stats and per-row weight from a kernel's per-row partial sums (see `_triton/grpo_loss.py`).

    Every loss type is sum_b w_b (row b's masked loss sum); w_b is returned as `row_scale`.
    Returns (loss fp32 0-dim, stats fp32 [4] or [5] in STAT_NAMES order, row_scale fp32 [B]).
    """
    row_loss, row_tokens = partials[:, 0], partials[:, 1]
    tokens = row_tokens.sum().clamp(min=1.0)
    if loss_type == "grpo":
        row_scale = 1.0 / (B * row_tokens.clamp(min=1.0))
    elif loss_type == "bnpo":
        row_scale = (1.0 / tokens).expand(B)
    elif loss_type == "dr_grpo":
        length = T if max_completion_length is None else max_completion_length
        row_scale = torch.full((B,), 1.0 / (B * length), dtype=torch.float32, device=device)
    else:
        items = tokens if num_items_in_batch is None else torch.as_tensor(
            num_items_in_batch, dtype=torch.float32, device=device).reshape(()).clamp(min=1.0)
        row_scale = (1.0 / items).expand(B)
    loss = (row_loss * row_scale).sum()
    sums = partials[:, 2:7].sum(0)
    clip_and_ratio = sums[:4] / (B if sequence else tokens)
    stats = torch.cat([clip_and_ratio, (sums[4] / tokens).reshape(1)]) if has_ref else clip_and_ratio
    return loss, stats, row_scale


class GRPOLossFunction(torch.autograd.Function):
    """A fused kernel's forward (which also writes d(row sum)/d logp) and a one-op backward."""

    @staticmethod
    def forward(ctx, logps, old_logps, ref_logps, advantages, mask, options, partials_fn):
        sequence = options["importance_sampling_level"] == "sequence"
        partials, dlogps = partials_fn(
            logps, old_logps, ref_logps, advantages, mask, write_grad=ctx.needs_input_grad[0], beta=options["beta"],
            epsilon_low=options["epsilon_low"], epsilon_high=options["epsilon_high"], delta=options["delta"],
            sequence=sequence)
        B, T = logps.shape
        loss, stats, row_scale = _finish(
            partials, B, T, logps.device, has_ref=ref_logps is not None, loss_type=options["loss_type"],
            sequence=sequence, num_items_in_batch=options["num_items_in_batch"],
            max_completion_length=options["max_completion_length"])
        ctx.save_for_backward(dlogps, row_scale)
        ctx.logps_dtype = logps.dtype
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, grad_stats):
        dlogps, row_scale = ctx.saved_tensors
        grad = dlogps * (row_scale * grad_loss).unsqueeze(1)
        return grad.to(ctx.logps_dtype), None, None, None, None, None, None


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, advantages: torch.Tensor, mask: torch.Tensor, *,
              ref_logps: torch.Tensor | None = None, beta: float = 0.0, loss_type: str = "grpo",
              epsilon_low: float = 0.2, epsilon_high: float = 0.2, delta: float | None = None,
              importance_sampling_level: str = "token", num_items_in_batch=None,
              max_completion_length: int | None = None, backend: str | None = None):
    """GRPO loss `(loss, stats)` of per-token log-probs `[B, T]`; semantics in the module docstring.

    `backend` is None (Triton for CUDA tensors; on CPU numba when installed and B*T <=
    NUMBA_MAX_TOKENS, else torch) or one of "torch", "triton", "numba".
    """
    _check(logps, old_logps, advantages, mask, ref_logps, beta, loss_type, epsilon_low, epsilon_high, delta,
           importance_sampling_level, num_items_in_batch, max_completion_length)
    options = dict(beta=float(beta), loss_type=loss_type, epsilon_low=float(epsilon_low),
                   epsilon_high=float(epsilon_high), delta=None if delta is None else float(delta),
                   importance_sampling_level=importance_sampling_level, num_items_in_batch=num_items_in_batch,
                   max_completion_length=max_completion_length)
    explicit = backend is not None
    backend = resolve_backend(OP, logps, backend)
    if backend == "numba" and not explicit and logps.numel() > NUMBA_MAX_TOKENS:
        backend = "torch"
    if backend == "torch" or logps.numel() == 0:
        return grpo_loss_ref(logps, old_logps, advantages, mask, ref_logps=ref_logps, **options)
    if backend == "triton":
        from ._triton.grpo_loss import grpo_loss_partials_triton as partials_fn
    else:
        from ._numba.grpo_loss import grpo_loss_partials_numba as partials_fn
    ref = ref_logps if beta != 0.0 else None
    loss, stats = GRPOLossFunction.apply(logps, old_logps, ref, advantages, mask, options, partials_fn)
    names = STAT_NAMES if beta != 0.0 else STAT_NAMES[:-1]
    return loss, {name: stats[i] for i, name in enumerate(names)}
