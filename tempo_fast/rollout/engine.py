"""Rollout engine: G sampled completions of each of B video prompts, decoded together.

GRPO samples G answers per prompt and inference asks many queries. Plain
`generate(num_return_sequences=G)` (and TRL) repeats each prompt G times and prefills every copy -
vision encoder included - one prompt at a time. Here B prompts are prefilled once each, in one
forward pass, their caches are shared by their G rows in one static B*G cache, and all B*G
continuations decode together:

    prefill(B prompts)     one [B, Lmax] right-padded forward with the B videos and each prompt's
                           own 3-D rotary ids (rollout/batching.py); logits at each prompt's last token
    share caches           [B, H, Lmax, D] -> [B*G, H, capacity, D] per layer (one copy; rows
                           b*G .. b*G+G-1 are prompt b's; right-aligned at slot Lmax with
                           batch_invariant)
    repeat: sample ->      B*G x 1 text tokens at rotary id next_position_b + step on all three
      decode               axes (Qwen2.5-VL's rule for text after the prompt), slots Lmax + step,
                           the pad slots of shorter prompts masked; no vision inputs
    finished rows          stop per row (EOS or a stop string). batch_invariant: a prompt whose G
                           rows have all stopped leaves the cache and the batch at once (the others
                           keep all their rows, so their bits do not change); masked path: once at
                           most `compact_below` of the rows still decode, the finished rows are
                           dropped (the copy is worth it when attention over long video caches
                           dominates a step); neither with `compile=True` or compact_below=0

`generate(prompt, G)` is `generate_batch([prompt], G)`; `generate_many(prompts, G)` cuts the
prompts into batches (`batch_size` prompts, `batch_tokens` padded prefill tokens at most).

Equality with the one-prompt engine. Each prompt draws its own block of uniforms (from its own
generator, or from a shared one in prompt order) before its first step (rollout/sampling.py), and
sampling is row-wise, so what a prompt samples depends only on its logits. Those are bitwise the
ones it gets alone with `batch_invariant=True` (the default on CPU, with sdpa attention): attention runs
per prompt on exactly its own queries and keys (rollout/invariant.py), and the linear layers'
per-row results do not depend on the row count once it is >= 8 on this machine's BLAS (the LM
head at the prefill always gets >= 8 rows). So with G >= 8 rows per prompt every token and every
log-prob equals the one-prompt engine's; with fewer rows, or `batch_invariant=False` (one masked
attention call over the padded cache, other key slots, other sum blocking), log-probs agree to
float rounding (~1e-6; up to ~7e-5 seen on a log-prob of ~2 in the parallel test suite) and a
sampled token can flip when its uniform falls that close to a CDF boundary (about 1 draw in 2000
with the tiny preset's flat distributions).
tests/test_rollout_batched.py checks both, greedy and sampled, mixed prompt lengths, a prompt
padded or not, every place in the batch, and a Qwen3-VL.

Decode steps have static shapes (B*G rows, one token, a cache of fixed capacity), so with
`compile=True` the step is `torch.compile(mode="reduce-overhead")`-d (CUDA graphs on GPU); eager
is the default. The capacity is Lmax + max_new_tokens rounded up to `cache_block` tokens and the
cache is reused by the next batch of the same shape, so compiled steps and their graphs are too.

Stopping, per row: an EOS id, or a stop string (default `</answer>`) completed by the token just
sampled, matched on the concatenated decoded text of single tokens (a stop string split over
several tokens is found; exact for ASCII stop strings with byte-level BPE tokenizers such as
Qwen's). The stopping token is part of the completion; after it the row is padded with the pad id
(mask 0, log-prob 0). A batch ends when all rows are done or after max_new_tokens. Each step
copies the sampled ids to the host (one small sync) for the stop checks.

Memory: the shared cache holds B*G*capacity tokens per layer (Qwen2.5-VL-7B in bf16: 56 KiB per
token; B=4, G=8 and 10k tokens = 18 GiB); the prefill cache is freed after the copy.
Limits: full-attention layers only (no sliding-window cache); batch_invariant needs sdpa attention
(other implementations take the masked path).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from tempo_fast.rollout import invariant
from tempo_fast.rollout.batching import pad_prompts, plan_batches, slot_mask
from tempo_fast.rollout.cache import SharedCaches
from tempo_fast.rollout.sampling import GREEDY, SamplingConfig, draw_block, sample_tokens


@dataclass
class Rollout:
    """G completions of one prompt."""

    completion_ids: torch.Tensor   # [G, T] long, padded with the pad id after each completion
    completion_mask: torch.Tensor  # [G, T] float, 1 on generated tokens (stop token included)
    logprobs: torch.Tensor         # [G, T] float32, log_softmax(logits / temperature) at each token, 0 on padding
    lengths: torch.Tensor          # [G] long, generated tokens per completion
    texts: list                    # G decoded completions (special tokens skipped)
    timing: dict = field(default_factory=dict)  # the batch's: prefill_s, decode_s, steps, tokens, prompts, ...


def _decode_forward(model, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                    cache) -> torch.Tensor:
    """One decode step: logits `[N, V]` of `input_ids` `[N, 1]` at `position_ids` `[3, N, 1]`."""
    out = model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                past_key_values=cache, use_cache=True)
    return out.logits[:, -1]


def _check_count(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"RolloutEngine: {name} must be an int {span}, got {value!r}")


class RolloutEngine:
    """Samples G completions per prompt, B prompts per forward (module docstring).

    vl: a `tempo_fast.model.VLModel`. compile: `torch.compile` the decode step (mode=
    "reduce-overhead": CUDA graphs on GPU; slow to warm up, meant for CUDA). cache_block: the cache
    capacity is Lmax + max_new_tokens rounded up to a multiple of this. batch_size / batch_tokens:
    `generate_many`'s default prompts per batch and padded prefill tokens per batch (None: no
    token limit). batch_invariant: attention per prompt on exactly its own keys (rollout/
    invariant.py), so batching changes no bit (with sdpa attention; not with compile); None: on
    CPU only - on CUDA, cuBLAS and the attention kernels choose by batch shape anyway, so the
    per-prompt calls would cost without making rows bitwise equal. compact_below: drop finished
    rows once at most this share of the rows decode; with batch_invariant, any value > 0 drops each
    whole prompt as soon as all its rows have stopped (0: never drop).
    """

    def __init__(self, vl, sampling: SamplingConfig | None = None, *, compile: bool = False,
                 cache_block: int = 256, batch_size: int = 8, batch_tokens: int | None = None,
                 batch_invariant: bool | None = None, compact_below: float = 0.5):
        self.vl = vl
        self.sampling = SamplingConfig() if sampling is None else sampling
        if not isinstance(self.sampling, SamplingConfig):
            raise TypeError(f"RolloutEngine: sampling must be a SamplingConfig, got {type(sampling).__name__}")
        _check_count("cache_block", cache_block, 1)
        _check_count("batch_size", batch_size, 1)
        if batch_tokens is not None:
            _check_count("batch_tokens", batch_tokens, 1)
        if not (isinstance(compact_below, (int, float)) and 0 <= compact_below <= 1):
            raise ValueError(f"RolloutEngine: compact_below must be in [0, 1], got {compact_below!r}")
        self.cache_block, self.batch_size, self.batch_tokens = int(cache_block), batch_size, batch_tokens
        self.compile = bool(compile)
        attention = vl.model.config.get_text_config()._attn_implementation
        if batch_invariant is None:
            batch_invariant = vl.device.type == "cpu"
        self.batch_invariant = bool(batch_invariant) and not self.compile and attention in ("sdpa", invariant.NAME)
        self.compact_below = 0.0 if self.compile else float(compact_below)
        self._step = _decode_forward
        if self.compile:
            self._step = torch.compile(_decode_forward, mode="reduce-overhead", dynamic=False)
        self._caches = SharedCaches(vl.model.config, self.batch_invariant)  # reused while their shapes fit
        self._pieces = {}           # token id -> its decoded text, for stop-string matching
        self._eos = frozenset(int(i) for i in vl.eos_token_ids)
        self._pad = int(vl.pad_token_id)

    # ---------------------------------------------------------------- prefill and cache sharing
    def _prefill(self, batch):
        """Logits `[B, V]` after each prompt's last token and the batch-B DynamicCache."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.vl.model.config)
        device = batch.input_ids.device
        # logits_to_keep as indices: [B, K, V] logits at every row's last index (padded to K >= 8
        # indices, so the LM head's product has >= 8 rows at any B); row b keeps its own.
        ends = [n - 1 for n in batch.lengths]
        last = torch.tensor(ends + ends[-1:] * max(0, 8 - len(ends)), dtype=torch.long, device=device)
        with self._plan(invariant.prefill_plan(batch.lengths, device)):
            out = self.vl.model(**batch.forward_kwargs(), past_key_values=cache, use_cache=True, logits_to_keep=last)
        rows = torch.arange(len(batch.lengths), device=device)
        return out.logits[rows, rows], cache

    def _plan(self, plan):
        """The batch-invariant attention plan around a forward (a no-op without batch_invariant)."""
        return invariant.rows_plan(self.vl.model, plan) if self.batch_invariant else contextlib.nullcontext()

    def _rows_to_keep(self, live: list, running: list, num_samples: int) -> list | None:
        """Current batch rows to keep after a step (None: keep them all). Masked path: the running
        rows, once at most `compact_below` of the rows run. Batch-invariant: every row of each
        prompt with a running row (whole finished prompts go; the others keep all their rows, so
        their attention segments and the >= 8-row products stay as they are alone)."""
        if not self.compact_below or len(running) == len(live):
            return None
        if self.batch_invariant:
            alive = {live[i] // num_samples for i in running}
            keep = [i for i, r in enumerate(live) if r // num_samples in alive]
            return keep if len(keep) < len(live) else None
        return running if len(running) <= self.compact_below * len(live) else None

    # ---------------------------------------------------------------- stop strings
    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self.vl.tokenizer.decode([token], skip_special_tokens=False)
            self._pieces[token] = piece
        return piece

    def _ends(self, tail: str, token: int) -> tuple[bool, str]:
        """(does `token` end the row, the row's new text tail) for stop-string matching."""
        if token in self._eos:
            return True, tail
        stops = self.sampling.stop_strings
        if not stops:
            return False, ""
        keep = max(len(s) for s in stops) - 1
        text = tail + self._piece(token)
        return any(s in text for s in stops), (text[-keep:] if keep else "")

    # ---------------------------------------------------------------- generation
    def generate(self, prompt, num_samples: int, *, generator: torch.Generator | None = None,
                 greedy_rows: int = 0) -> Rollout:
        """`num_samples` completions of `prompt` (a `tempo_fast.model.PromptInputs`).

        The first `greedy_rows` rows decode greedily (argmax, log-probs at temperature 1) from the
        same shared prefill as the sampled rows: inference gets its greedy answer and its sampled
        candidates from one prefill. The uniforms are drawn for every row, so the sampled rows'
        draws do not depend on greedy_rows.
        """
        return self.generate_batch([prompt], num_samples, generators=[generator], greedy_rows=greedy_rows)[0]

    def generate_many(self, prompts, num_samples: int, generator=None, *, greedy_rows: int = 0,
                      batch_size: int | None = None, batch_tokens: int | None = None) -> list:
        """`generate` for every prompt, `batch_size` prompts per forward (default: the engine's).

        generator: one torch.Generator the prompts draw from in turn (each its whole block, so the
        result equals `generate` called prompt by prompt), or a list of one per prompt, or None
        (torch's default generator). batch_tokens: padded prefill tokens per batch at most.
        """
        prompts = list(prompts)
        gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * len(prompts)
        if len(gens) != len(prompts):
            raise ValueError(f"RolloutEngine.generate_many: {len(gens)} generators for {len(prompts)} prompts "
                             "(pass one generator, or one per prompt)")
        size = self.batch_size if batch_size is None else batch_size
        budget = self.batch_tokens if batch_tokens is None else batch_tokens
        out = []
        for run in plan_batches([int(p.input_ids.shape[-1]) for p in prompts], size, budget):
            out += self.generate_batch([prompts[i] for i in run], num_samples, generators=[gens[i] for i in run],
                                       greedy_rows=greedy_rows)
        return out

    def generate_batch(self, prompts, num_samples: int, *, generators=None, greedy_rows: int = 0) -> list:
        """`num_samples` completions of each of the B `prompts`, from one prefill of all of them.

        generators: None, or one torch.Generator (or None) per prompt; a generator given for
        several prompts is drawn from in prompt order. Returns one `Rollout` per prompt; each
        one's `timing` is the whole batch's.
        """
        _check_count("num_samples", num_samples, 1)
        _check_count("greedy_rows", greedy_rows, 0, num_samples)
        prompts = list(prompts)
        gens = [None] * len(prompts) if generators is None else list(generators)
        if len(gens) != len(prompts):
            raise ValueError(f"RolloutEngine.generate_batch: {len(gens)} generators for {len(prompts)} prompts")
        sampling, G, device = self.sampling, num_samples, self.vl.device
        batch = pad_prompts(prompts, self._pad, device)
        B, width, max_new = len(prompts), batch.width, sampling.max_new_tokens
        N = B * G
        capacity = -(-(width + max_new) // self.cache_block) * self.cache_block
        with torch.inference_mode():
            blocks = [draw_block(sampling, G, gen, device) for gen in gens]
            uniforms = None if blocks[0] is None else torch.stack(blocks, 1).reshape(max_new, N)
            t0 = time.perf_counter()
            logits, prefix = self._prefill(batch)
            cache = self._caches.share(prefix, G, capacity, batch.lengths)
            del prefix
            logits = logits.float().repeat_interleave(G, dim=0)
            _sync(device)
            t1 = time.perf_counter()

            rows = torch.arange(N, device=device)           # original row of each current batch row
            mask = slot_mask(batch.lengths, G, width, capacity, device)
            next_pos = batch.next_positions.repeat_interleave(G)
            greedy = None  # current batch rows that decode greedily (greedy_rows of a sampled batch)
            if greedy_rows and not sampling.greedy:
                greedy = ((rows % G) < greedy_rows).nonzero()[:, 0]
            out_ids = torch.full((N, max_new), self._pad, dtype=torch.long, device=device)
            out_lp = torch.zeros((N, max_new), dtype=torch.float32, device=device)
            active = [True] * N
            lengths = [0] * N
            tails = [""] * N
            live = list(range(N))                            # original rows of the current batch rows
            prompts_live = list(range(B))                    # prompts whose rows are in the batch, in order
            steps, row_steps = 0, 0
            for step in range(max_new):
                tokens, logprobs = sample_tokens(logits, sampling, None if uniforms is None else uniforms[step, rows])
                if greedy is not None and greedy.numel():
                    tokens[greedy], logprobs[greedy] = sample_tokens(logits[greedy], GREEDY)
                done = torch.tensor([not active[r] for r in live], device=device)
                tokens = tokens.masked_fill(done, self._pad)
                out_ids[rows, step] = tokens
                out_lp[rows, step] = logprobs.masked_fill(done, 0.0)
                steps, row_steps = step + 1, row_steps + len(live)
                for r, token in zip(live, tokens.tolist()):
                    if active[r]:
                        lengths[r] = step + 1
                        ended, tails[r] = self._ends(tails[r], token)
                        active[r] = not ended
                running = [i for i, r in enumerate(live) if active[r]]
                if not running or step + 1 == max_new:
                    break
                keep = self._rows_to_keep(live, running, G)
                if keep is not None:
                    index = torch.tensor(keep, dtype=torch.long, device=device)
                    cache = self._caches.compact(cache, index, capacity)
                    rows, mask, next_pos, tokens = rows[index], mask[index], next_pos[index], tokens[index]
                    if greedy is not None:
                        greedy = ((rows % G) < greedy_rows).nonzero()[:, 0]
                    live = [live[i] for i in keep]
                    prompts_live = sorted({r // G for r in live})
                position = (next_pos + step).view(1, -1, 1).expand(3, -1, 1)
                with self._plan(invariant.decode_plan([batch.lengths[b] for b in prompts_live], G, width, step)):
                    logits = self._step(self.vl.model, tokens[:, None], position, mask, cache).float()
            _sync(device)
            t2 = time.perf_counter()

        tokens_total = int(sum(lengths))
        decode_s = t2 - t1
        timing = {"prefill_s": t1 - t0, "decode_s": decode_s, "steps": steps, "row_steps": row_steps,
                  "tokens": tokens_total, "prompts": B, "prompt_tokens": int(sum(batch.lengths)),
                  "padded_prompt_tokens": B * width, "tokens_per_s": tokens_total / max(decode_s, 1e-9)}
        return [self._rollout(out_ids[b * G:(b + 1) * G], out_lp[b * G:(b + 1) * G], lengths[b * G:(b + 1) * G],
                              timing) for b in range(B)]

    def _rollout(self, ids: torch.Tensor, logprobs: torch.Tensor, lengths: list, timing: dict) -> Rollout:
        width = max(lengths)
        lengths_t = torch.tensor(lengths, dtype=torch.long)
        mask = (torch.arange(width)[None, :] < lengths_t[:, None]).float().to(ids.device)
        completion = ids[:, :width].clone()
        texts = self.vl.tokenizer.batch_decode([row[:n] for row, n in zip(completion.tolist(), lengths)],
                                               skip_special_tokens=True)
        return Rollout(completion_ids=completion, completion_mask=mask, logprobs=logprobs[:, :width].clone(),
                       lengths=lengths_t.to(ids.device), texts=texts, timing=dict(timing))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
