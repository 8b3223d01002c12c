"""Batch-invariant attention for the rollout engine: each prompt's attention computed on exactly
the tensors it would have alone, so batching prompts does not change a bit of their logits.

Why: torch's CPU attention (and GPU kernels likewise) blocks its sums by the key length and the
batch rows, so a prompt's attention inside a right-padded batch (keys up to Lmax, generated keys
at slots Lmax + step, B*G rows) rounds differently from the same prompt alone (keys up to L,
generated keys at L + step, G rows): ~1e-7 per layer, enough to flip a sampled token now and then
(an inverse-CDF draw near a boundary between two tokens; ~1 in 2000 draws for the tiny preset).

How: while the engine runs a forward inside `rows_plan(plan)`, the text model's attention is
`rows_attention` (registered with transformers as "tempo_rows", attention function and mask),
which cuts the batch into the plan's segments - one per prompt - and calls
`scaled_dot_product_attention` once per segment on exactly that prompt's queries and keys:

    prefill   rows [b], queries and keys 0..L_b-1, causal (contiguous copies)
    decode    prompt b's G rows, no mask, keys at slots width-L_b..width+step of the engine's
              RIGHT-aligned cache (its prompt keys end at slot width, the generated ones follow):
              one contiguous slot range, so a strided view of the cache (no copy) and sdpa's
              enable_gqa (no GQA repeat copy), which on the CPU give the bits of contiguous,
              repeated copies (tests/test_rollout_batched.py)

A prompt alone (B = 1, Lmax = L_b) makes the very same calls, so its outputs are bitwise equal.
The linear layers see B*G rows instead of G: on this machine's BLAS (MKL) a row's result does not
depend on the row count once it is >= 8 (checked in tests/test_rollout_batched.py through the
whole engine), so G >= 8 rows per prompt (GRPO's G=8, inference's 1 + 8) keep every bit - also
when finished prompts leave the batch (each remaining prompt keeps its G rows); with fewer rows
per prompt the log-probs still agree to float rounding. Outside `rows_plan` (training forwards,
other callers) "tempo_rows" is plain sdpa.

Cost: one attention call per prompt per layer and step (decode: ~4 ops each, on views);
`RolloutEngine(batch_invariant=False)` is the one-call masked path over the static cache, which
`compile=True` and CUDA use by default (GPU GEMM and attention kernels are chosen by batch shape,
so per-prompt attention alone would not make rows bitwise equal there).
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NAME = "tempo_rows"
_PLAN = contextvars.ContextVar("tempo_rows_plan", default=None)


@dataclass
class Segment:
    """One prompt's part of a forward: its batch rows, its query length, its key slots."""

    rows: slice               # batch rows of this prompt
    queries: int              # leading query positions that are real (prefill: L_b; decode: 1)
    slots: torch.Tensor       # [S] long: the key/value slots it attends to, in order
    causal: bool              # prefill (causal over the slots) or decode (all slots)


def prefill_plan(lengths: list, device) -> list:
    return [Segment(slice(b, b + 1), n, torch.arange(n, device=device), True) for b, n in enumerate(lengths)]


@dataclass
class DecodePlan:
    """A decode step's segments. The engine's batch-invariant cache is RIGHT-aligned: prompt b's
    keys sit at slots width-L_b..width-1 and its generated ones at width..width+step, so its
    G consecutive rows (in batch order) attend to one contiguous slot range, no mask."""

    lengths: list             # L_b of the prompts in the batch, in order
    num_samples: int          # rows per prompt
    width: int                # slot of the first generated token (Lmax of the prefill)
    step: int                 # generated tokens in the cache before this step's (step + 1 after it)

    def segments(self):
        """(rows, first slot, end slot) of each prompt."""
        G, end = self.num_samples, self.width + self.step + 1
        return [(slice(b * G, (b + 1) * G), self.width - n, end) for b, n in enumerate(self.lengths)]


def decode_plan(lengths: list, num_samples: int, width: int, step: int) -> DecodePlan:
    """The plan of a decode step over a right-aligned cache (`DecodePlan`)."""
    return DecodePlan(list(lengths), int(num_samples), int(width), int(step))


@contextlib.contextmanager
def rows_plan(model, plan: list):
    """Run the text model's attention segment by segment (module docstring) inside the block."""
    register()
    text = model.config.get_text_config()
    before = text._attn_implementation
    if before != "sdpa":
        raise ValueError(f"batch-invariant rollouts need sdpa attention, the model uses {before!r}; "
                         "use RolloutEngine(batch_invariant=False)")
    token = _PLAN.set(plan)
    text._attn_implementation = NAME
    try:
        yield
    finally:
        text._attn_implementation = before
        _PLAN.reset(token)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    rows, heads, length, dim = x.shape
    return x[:, :, None].expand(rows, heads, n_rep, length, dim).reshape(rows, heads * n_rep, length, dim)


def rows_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention by the current plan's segments (plain sdpa without a plan). Returns transformers'
    layout: (output [N, q, heads, dim], None)."""
    plan = _PLAN.get()
    if plan is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    n_rep = query.shape[1] // key.shape[1]
    if isinstance(plan, DecodePlan):
        return _decode_attention(plan, query, key, value, n_rep, scaling), None
    out = query.new_zeros(query.shape)
    for seg in plan:
        q = query[seg.rows, :, :seg.queries].contiguous()
        k = _repeat_kv(key[seg.rows].index_select(2, seg.slots), n_rep)
        v = _repeat_kv(value[seg.rows].index_select(2, seg.slots), n_rep)
        out[seg.rows, :, :seg.queries] = F.scaled_dot_product_attention(q, k, v, is_causal=seg.causal, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _decode_attention(plan: DecodePlan, query, key, value, n_rep: int, scaling) -> torch.Tensor:
    """A decode step's attention, prompt by prompt, on views: `[N, 1, heads, dim]`. Prompt b's
    keys and values are the cache's slots width-L_b..width+step of its rows (a strided view, no
    copy) and its GQA heads are sdpa's `enable_gqa` (no repeat copy): on the CPU this gives the
    same bits as sdpa on contiguous, repeated copies of the same keys
    (tests/test_rollout_batched.py checks it for several head ratios and lengths)."""
    G = plan.num_samples
    if key.shape[0] != len(plan.lengths) * G:
        raise ValueError(f"batch-invariant decode: the cache has {key.shape[0]} rows, the plan "
                         f"{len(plan.lengths)} prompts x {G}")
    gqa = n_rep > 1
    outs = [F.scaled_dot_product_attention(query[rows, :, :1].contiguous(), key[rows, :, start:end],
                                           value[rows, :, start:end], scale=scaling, enable_gqa=gqa)
            for rows, start, end in plan.segments()]
    return torch.cat(outs).transpose(1, 2).contiguous()


def register() -> None:
    """Make "tempo_rows" known to transformers (attention function and mask: sdpa's)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, rows_attention)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
