"""Rollout engine: G sampled completions of one video prompt from one shared prefill.

GRPO samples G answers per prompt. Plain `generate(num_return_sequences=G)` (and TRL) repeats the
prompt G times and prefills every copy - vision encoder included - although all copies are equal.
Here the prompt (video + query) is prefilled once at batch 1, its key/value cache is copied into a
preallocated batch-G `StaticCache` sized for prompt + max_new_tokens, and the G continuations
decode together:

    prefill(prompt)              1 x L tokens, vision inputs, the prompt's explicit 3-D position ids
    share cache                  [1, H, L, D] -> [G, H, capacity, D] per layer (one copy)
    repeat: sample -> decode     G x 1 text tokens at rotary id next_position + step on all three
                                 axes (Qwen2.5-VL's rule for text after the prompt), no vision inputs

Decode steps have static shapes (a fixed batch G, one token, a cache of fixed capacity), so with
`compile=True` the step is `torch.compile(mode="reduce-overhead")`-d (CUDA graphs on GPU); eager is
the default. The cache capacity is rounded up to `cache_block` tokens and the cache is reused by the
next prompt that fits, so compiled steps and their graphs are reused too.

Sampling (`sample_tokens`): temperature, then top-k, then top-p (transformers' warper order and
semantics), or greedy argmax. A token is drawn by inverse CDF from ONE uniform number per sequence
and step, `u ~ U[0, 1)`, drawn for all G rows at every step (finished rows too) from `generator`:
the candidates in vocabulary order (no top-k/top-p) or in descending probability (with them), and
the token is the first whose cumulative probability exceeds u times the total. The draws consumed
are therefore a fixed function of the seed, the step count and G, which is what lets a test replay
them through an unshared reference.

Log-probs: `log_softmax(logits / temperature)` at the sampled token from the very forward pass that
produced it - the untruncated temperature-scaled distribution (top-k/top-p are not applied), as
TRL's GRPO loss computes them; temperature 1 when greedy.

Stopping, per sequence: an EOS id, or a stop string (default `</answer>`) completed by the token
just sampled. Stop strings are matched on the concatenated decoded text of single tokens, so a
stop string split over several tokens is found (exact for ASCII stop strings with byte-level BPE
tokenizers such as Qwen's). The stopping token is part of the completion; after it the sequence
is padded with the pad id (mask 0, log-prob 0). The loop ends when all G are done or after
max_new_tokens. Each step copies the G sampled ids to the host (one small sync) for stop checks.

Memory: the shared cache holds G * capacity tokens per layer (e.g. Qwen2.5-VL-7B in bf16: 56 KiB
per token, G=8 and 20k tokens = 9 GiB); the batch-1 prefill cache is freed after the copy.
Limits: full-attention layers only (no sliding-window cache); one prompt per prefill
(`generate_many` loops over prompts).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

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


@dataclass
class Rollout:
    """G completions of one prompt."""

    completion_ids: torch.Tensor   # [G, T] long, padded with the pad id after each completion
    completion_mask: torch.Tensor  # [G, T] float, 1 on generated tokens (stop token included)
    logprobs: torch.Tensor         # [G, T] float32, log_softmax(logits / temperature) at each token, 0 on padding
    lengths: torch.Tensor          # [G] long, generated tokens per completion
    texts: list                    # G decoded completions (special tokens skipped)
    timing: dict = field(default_factory=dict)  # prefill_s, decode_s, steps, tokens, tokens_per_s


_GREEDY = SamplingConfig(greedy=True)


def draw_uniforms(num: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """`[num]` float32 uniforms in [0, 1) from `generator` (on its own device), moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(num, generator=generator, device=gen_device, dtype=torch.float32).to(device)


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


def _decode_forward(model, input_ids: torch.Tensor, position_ids: torch.Tensor, cache) -> torch.Tensor:
    """One decode step: logits `[G, V]` of `input_ids` `[G, 1]` at `position_ids` `[3, G, 1]`."""
    out = model(input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True)
    return out.logits[:, -1]


class RolloutEngine:
    """Samples G completions per prompt from one shared prefill (module docstring).

    vl: a `tempo_fast.model.VLModel`. compile: `torch.compile` the decode step
    (mode="reduce-overhead": CUDA graphs on GPU; slow to warm up, meant for CUDA). cache_block: the
    cache capacity is prompt + max_new_tokens rounded up to a multiple of this.
    """

    def __init__(self, vl, sampling: SamplingConfig | None = None, *, compile: bool = False,
                 cache_block: int = 256):
        self.vl = vl
        self.sampling = SamplingConfig() if sampling is None else sampling
        if not isinstance(self.sampling, SamplingConfig):
            raise TypeError(f"RolloutEngine: sampling must be a SamplingConfig, got {type(sampling).__name__}")
        if cache_block < 1:
            raise ValueError(f"RolloutEngine: cache_block must be >= 1, got {cache_block}")
        self.cache_block = int(cache_block)
        self.compile = bool(compile)
        self._step = _decode_forward
        if self.compile:
            self._step = torch.compile(_decode_forward, mode="reduce-overhead", dynamic=False)
        self._cache = None          # the shared StaticCache, reused while its shape fits
        self._cache_key = None      # (G, capacity, dtype, device) of self._cache
        self._pieces = {}           # token id -> its decoded text, for stop-string matching
        self._eos = frozenset(int(i) for i in vl.eos_token_ids)
        self._pad = int(vl.pad_token_id)

    # ---------------------------------------------------------------- prefill and cache sharing
    def _prefill(self, prompt):
        """Logits `[1, V]` after the prompt and its batch-1 DynamicCache (one forward pass)."""
        from transformers import DynamicCache

        from tempo_fast.model import forward_kwargs

        cache = DynamicCache(config=self.vl.model.config)
        out = self.vl.model(**forward_kwargs(prompt), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], cache

    def _shared_cache(self, prefix, num_samples: int, capacity: int):
        """A batch-`num_samples` StaticCache holding `prefix`'s keys/values in every row."""
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        first_keys = prefix.layers[0].keys
        key = (num_samples, capacity, first_keys.dtype, first_keys.device)
        if self._cache is None or self._cache_key != key:
            self._cache = None  # free the old buffers before allocating new ones
            cache = StaticCache(config=self.vl.model.config, max_cache_len=capacity)
            bad = [type(layer).__name__ for layer in cache.layers if type(layer) is not StaticLayer]
            if bad:
                raise NotImplementedError(f"RolloutEngine: only full-attention cache layers are supported, "
                                          f"the model's config asks for {sorted(set(bad))}")
            cache.early_initialization(batch_size=num_samples,
                                       num_heads=[layer.keys.shape[1] for layer in prefix.layers],
                                       head_dim=[layer.keys.shape[-1] for layer in prefix.layers],
                                       dtype=first_keys.dtype, device=first_keys.device)
            self._cache, self._cache_key = cache, key
        length = first_keys.shape[2]
        for shared, layer in zip(self._cache.layers, prefix.layers):
            # In place: compiled steps and CUDA graphs hold these buffers' addresses. Slots past
            # `length` keep stale values; the causal mask (by cumulative_length) never reads them.
            shared.keys[:, :, :length].copy_(layer.keys.expand(num_samples, -1, -1, -1))
            shared.values[:, :, :length].copy_(layer.values.expand(num_samples, -1, -1, -1))
            shared.cumulative_length.fill_(length)
        return self._cache

    # ---------------------------------------------------------------- stop strings
    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self.vl.tokenizer.decode([token], skip_special_tokens=False)
            self._pieces[token] = piece
        return piece

    def _stops(self, tails: list, tokens: list, active: list) -> list:
        """Which active rows end with `tokens` (EOS, or a stop string completed); updates `tails`."""
        stops = self.sampling.stop_strings
        keep = max((len(s) for s in stops), default=1) - 1
        ended = [False] * len(tokens)
        for g, (token, alive) in enumerate(zip(tokens, active)):
            if not alive:
                continue
            if token in self._eos:
                ended[g] = True
                continue
            if stops:
                text = tails[g] + self._piece(token)
                ended[g] = any(s in text for s in stops)
                tails[g] = text[-keep:] if keep else ""
        return ended

    # ---------------------------------------------------------------- generation
    def generate(self, prompt, num_samples: int, *, generator: torch.Generator | None = None,
                 greedy_rows: int = 0) -> Rollout:
        """`num_samples` completions of `prompt` (a `tempo_fast.model.PromptInputs`).

        The first `greedy_rows` rows decode greedily (argmax, log-probs at temperature 1) from the
        same shared prefill as the sampled rows: inference gets its greedy answer and its sampled
        candidates from one prefill. Every row still consumes its uniform draw at every step, so the
        sampled rows' draws do not depend on greedy_rows.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"RolloutEngine.generate: num_samples must be an int >= 1, got {num_samples!r}")
        if isinstance(greedy_rows, bool) or not isinstance(greedy_rows, int) or not 0 <= greedy_rows <= num_samples:
            raise ValueError(f"RolloutEngine.generate: greedy_rows must be an int in [0, num_samples={num_samples}], "
                             f"got {greedy_rows!r}")
        ids = getattr(prompt, "input_ids", None)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != 1:
            raise ValueError(f"RolloutEngine.generate: prompt.input_ids must be a [1, L] tensor, got "
                             f"{None if ids is None else tuple(ids.shape)}")
        sampling, G = self.sampling, num_samples
        device = self.vl.device
        if ids.device != device:
            raise ValueError(f"RolloutEngine.generate: the prompt is on {ids.device}, the model on {device}; "
                             "build the prompt with device=vl.device or move it with prompt.to(...)")
        length, max_new = ids.shape[1], sampling.max_new_tokens
        capacity = -(-(length + max_new) // self.cache_block) * self.cache_block
        with torch.inference_mode():
            t0 = time.perf_counter()
            logits, prefix = self._prefill(prompt)
            cache = self._shared_cache(prefix, G, capacity)
            del prefix
            logits = logits.float().expand(G, -1)
            _sync(device)
            t1 = time.perf_counter()

            out_ids = torch.full((G, max_new), self._pad, dtype=torch.long, device=device)
            out_lp = torch.zeros((G, max_new), dtype=torch.float32, device=device)
            done = torch.zeros(G, dtype=torch.bool, device=device)
            active = [True] * G
            lengths = [0] * G
            tails = [""] * G
            pad = torch.full((G,), self._pad, dtype=torch.long, device=device)
            steps = 0
            for step in range(max_new):
                uniforms = None if sampling.greedy else draw_uniforms(G, generator, device)
                tokens, logprobs = sample_tokens(logits, sampling, uniforms)
                if greedy_rows and not sampling.greedy:
                    tokens[:greedy_rows], logprobs[:greedy_rows] = sample_tokens(logits[:greedy_rows], _GREEDY)
                tokens = torch.where(done, pad, tokens)
                out_ids[:, step] = tokens
                out_lp[:, step] = logprobs.masked_fill(done, 0.0)
                steps = step + 1
                token_list = tokens.tolist()
                ended = self._stops(tails, token_list, active)
                for g in range(G):
                    if active[g]:
                        lengths[g] = step + 1
                        active[g] = not ended[g]
                if not any(active) or step + 1 == max_new:
                    break
                done = torch.tensor([not a for a in active], device=device)
                position = torch.full((3, G, 1), prompt.next_position + step, dtype=torch.long, device=device)
                logits = self._step(self.vl.model, tokens[:, None], position, cache).float()
            _sync(device)
            t2 = time.perf_counter()

        width = max(lengths)
        lengths_t = torch.tensor(lengths, dtype=torch.long)
        mask = (torch.arange(width)[None, :] < lengths_t[:, None]).float().to(device)
        completion = out_ids[:, :width].clone()
        texts = self.vl.tokenizer.batch_decode([row[:n] for row, n in zip(completion.tolist(), lengths)],
                                               skip_special_tokens=True)
        tokens_total = int(sum(lengths))
        decode_s = t2 - t1
        timing = {"prefill_s": t1 - t0, "decode_s": decode_s, "steps": steps, "tokens": tokens_total,
                  "prompt_tokens": int(length), "tokens_per_s": tokens_total / max(decode_s, 1e-9)}
        return Rollout(completion_ids=completion, completion_mask=mask, logprobs=out_lp[:, :width].clone(),
                       lengths=lengths_t.to(device), texts=texts, timing=timing)

    def generate_many(self, prompts, num_samples: int, generator: torch.Generator | None = None) -> list:
        """`generate` for each prompt in turn (one shared prefill per prompt)."""
        return [self.generate(prompt, num_samples, generator=generator) for prompt in prompts]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
