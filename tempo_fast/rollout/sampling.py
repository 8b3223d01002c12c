"""Sampling: how a completion's next token is drawn from the logits, and the random numbers it uses.

`sample_tokens`: temperature, then top-k, then top-p (transformers' warper order and semantics),
or greedy argmax. A token is drawn by inverse CDF from ONE uniform number `u ~ U[0, 1)` per
sequence and step: the candidates in vocabulary order (no top-k/top-p) or in descending
probability (with them), and the token is the first whose cumulative probability exceeds u times
the total. Every operation is row-wise, so a row's token does not depend on the other rows.

Random numbers (`draw_block`): each prompt's generation draws its whole `[max_new_tokens, G]`
block of uniforms from its generator before the first step (finished rows' numbers are drawn
too and left unused). What a prompt samples is therefore a function of its generator's state
alone - not of the other prompts in its batch, of the batch size, or of when its rows stop -
which is what lets the batched engine equal the one-prompt engine, and tests replay the draws
through an unshared reference.

Log-probs: `log_softmax(logits / temperature)` at the sampled token - the untruncated
temperature-scaled distribution (top-k/top-p are not applied), as TRL's GRPO loss computes them;
temperature 1 when greedy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SamplingConfig:
    """How completions are sampled."""

    max_new_tokens: int = 64   # most tokens generated per completion (stop token included)
    temperature: float = 1.0   # logits are divided by this before sampling (> 0; ignored when greedy)
    top_p: float = 1.0         # nucleus: keep the smallest top set of mass >= top_p (1.0: off)
    top_k: int = 0             # keep the k most likely tokens (0: off)
    greedy: bool = False       # argmax decoding; log-probs at temperature 1
    stop_strings: tuple = ("</answer>",)  # a completion ends once its text contains one of these

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise ValueError(f"SamplingConfig: max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ValueError(f"SamplingConfig: temperature must be a finite number > 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"SamplingConfig: top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingConfig: top_k must be an int >= 0 (0: off), got {self.top_k!r}")
        if isinstance(self.stop_strings, str):
            raise ValueError(f"SamplingConfig: stop_strings must be a sequence of strings, got the string "
                             f"{self.stop_strings!r}; wrap it in a tuple")
        self.stop_strings = tuple(self.stop_strings)
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ValueError(f"SamplingConfig: stop_strings must be non-empty strings, got {self.stop_strings!r}")


GREEDY = SamplingConfig(greedy=True)  # argmax rows of a sampled batch (greedy_rows)


def draw_uniforms(num: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """`[num]` float32 uniforms in [0, 1) from `generator` (on its own device), moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(num, generator=generator, device=gen_device, dtype=torch.float32).to(device)


def draw_block(sampling: SamplingConfig, num_samples: int, generator: torch.Generator | None,
               device) -> torch.Tensor | None:
    """The uniforms one prompt's generation consumes: `[max_new_tokens, num_samples]` float32
    (row s: step s, one per sample) drawn in one call before its first step, or None when greedy.

    Drawn whole, whatever step the completions stop at, so a generator shared by several prompts
    is consumed by the same amount per prompt: prompts drawn in turn from one generator get the
    same uniforms whether they are decoded one by one or batched.
    """
    if sampling.greedy:
        return None
    return draw_uniforms(sampling.max_new_tokens * num_samples, generator, device).view(
        sampling.max_new_tokens, num_samples)


def sample_tokens(logits: torch.Tensor, sampling: SamplingConfig,
                  uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens `[G]` long, log-probs `[G]` float32) sampled from `logits` `[G, V]`.

    `uniforms` `[G]` in [0, 1) drive the inverse-CDF draw (module docstring); unused when greedy.
    Log-probs are of the untruncated temperature-scaled distribution (temperature 1 when greedy).
    """
    if logits.dim() != 2:
        raise ValueError(f"sample_tokens: logits must be [G, V], got shape {tuple(logits.shape)}")
    logits = logits.float()
    if sampling.greedy:
        tokens = logits.argmax(-1)
        logprobs = logits.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(logits, -1)
        return tokens, logprobs
    if uniforms is None or uniforms.shape != logits.shape[:1]:
        raise ValueError(f"sample_tokens: need uniforms of shape [{logits.shape[0]}] when sampling, got "
                         f"{None if uniforms is None else tuple(uniforms.shape)}")
    scaled = logits / sampling.temperature
    vocab = scaled.shape[-1]
    if sampling.top_k > 0 or sampling.top_p < 1:
        k = min(sampling.top_k, vocab) if sampling.top_k > 0 else vocab
        values, order = torch.topk(scaled, k, dim=-1, sorted=True)
        probs = torch.softmax(values, -1)
        if sampling.top_p < 1:
            before = probs.cumsum(-1) - probs     # mass of the more likely candidates
            keep = before < sampling.top_p
            keep[:, 0] = True
            probs = probs.masked_fill(~keep, 0.0)
    else:
        order = None
        probs = torch.softmax(scaled, -1)
    cdf = probs.cumsum(-1)
    target = (uniforms.to(cdf.device, torch.float32) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
    tokens = (index if order is None else order.gather(-1, index))[:, 0]
    logprobs = scaled.gather(-1, tokens[:, None])[:, 0] - torch.logsumexp(scaled, -1)
    return tokens, logprobs
