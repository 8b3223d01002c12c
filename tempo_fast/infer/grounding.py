"""Grounding one query: `ground` answers one (video, query) pair; `Grounder` answers a batch of
prepared queries (what `predict` runs); `merge_candidates` scores the windows.

One query runs: probe + SAA frame sampling (`alpha=0`: plain uniform sampling, no probe decode)
→ `model.build_prompt` (ETA layout, time-true position ids, pixels) → the rollout engine (one
greedy answer, then `num_samples` sampled answers, from one prefill; B queries per forward in
`predict`) → `rewards.parse_answer` with the video's duration → scored windows. Each query
samples from its own generator seeded by (seed, video id, query), so its answer is the same alone
(`ground`), in any batch, shard or rerun.

Scored windows (`merge_candidates`), the rule:
- every window of every answer (the greedy answer first, then the samples in order) joins the
  cluster whose *seed* (its first window) it overlaps most, when that IoU is at least
  `merge_iou`; otherwise it seeds a new cluster;
- a cluster's window is its seed when the greedy answer seeded it (the model's own best answer is
  kept exactly), else the mean start and mean end of its members;
- a cluster's score is the share of answers (greedy + samples, refusals and unreadable answers
  included) holding a window in it: `score="frequency"` counts each answer once,
  `score="likelihood"` weights each by its per-token probability exp(mean log-prob) (the log-probs
  the engine returns: temperature 1 for the greedy answer, the sampling temperature for samples);
- order: the greedy answer's windows first, as written (the official R1 reads the first listed
  window), then the other clusters by decreasing score; at most `max_windows` are kept.
The answer is a refusal when the greedy answer refuses; `refusal_score` is the share of sampled
answers that refuse. A refusal keeps the samples' windows (scored as above) for callers that
threshold `refusal_score` themselves; the metrics count a refused prediction as a miss.
"""
from __future__ import annotations

import math
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Sequence

import torch

from tempo_fast.infer.config import InferConfig

TIMING_KEYS = ("decode_s", "preprocess_s", "prefill_s", "generate_s", "total_s")
_TOKENIZER_LOCK = threading.Lock()


# ---------------------------------------------------------------- candidates


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a[0] == b[0] and a[1] == b[1])


def merge_candidates(answers, weights: Sequence[float] | None = None, *, merge_iou: float = 0.5,
                     max_windows: int = 10, greedy_first: bool = True) -> list[list[float]]:
    """Scored windows `[[start, end, score], ...]` from parsed answers (module docstring rule).

    answers: `rewards.Answer`s, the greedy one first when `greedy_first`; weights: one per answer
    (None: 1 each, i.e. frequency scoring). Scores are in [0, 1].
    """
    weights = [1.0] * len(answers) if weights is None else [float(w) for w in weights]
    if len(weights) != len(answers):
        raise ValueError(f"merge_candidates: {len(answers)} answers but {len(weights)} weights")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"merge_candidates: weights must be finite and >= 0, got {weights}")
    clusters = []  # dicts: seed window, members, supporting answer indices, seeded by the greedy answer
    for i, answer in enumerate(answers):
        for window in answer.windows:
            ious = [_iou(window, c["seed"]) for c in clusters]
            best = max(range(len(ious)), key=ious.__getitem__, default=None)
            if best is not None and ious[best] >= merge_iou:
                clusters[best]["members"].append(window)
                clusters[best]["support"].add(i)
            else:
                clusters.append({"seed": window, "members": [window], "support": {i},
                                 "greedy": greedy_first and i == 0})
    total = sum(weights)
    out = []
    for c in clusters:
        score = sum(weights[i] for i in c["support"]) / total if total > 0 else 0.0
        start, end = c["seed"] if c["greedy"] else (sum(w[k] for w in c["members"]) / len(c["members"])
                                                    for k in (0, 1))
        out.append((not c["greedy"], -score if not c["greedy"] else 0.0, [start, end, score]))
    out.sort(key=lambda item: item[:2])  # stable: greedy windows as written, the rest by score
    return [[round(s, 3), round(e, 3), round(score, 4)] for _, _, (s, e, score) in out[:max_windows]]


def answer_likelihoods(logprobs: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Per-token probability exp(mean log-prob) of each of G answers (`[G, T]` log-probs and mask)."""
    mask = mask.float()
    mean = (logprobs.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.exp(mean).tolist()


# ---------------------------------------------------------------- one query


def load(model, config: InferConfig):
    """`model` if it is a loaded `VLModel`, else the one it names (None: `config.model`) loaded on
    `config.device` in `config.dtype`."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    from tempo_fast.model import load_model

    dtype = None if config.dtype is None else getattr(torch, config.dtype)
    from tempo_fast.train.dist import resolve_device

    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    return load_model(os.fspath(model or config.model), device=str(device), dtype=dtype,
                      attn_implementation=config.attn_implementation)


def pixel_bounds(vl, config: InferConfig) -> tuple[int, int]:
    """(min_pixels, max_pixels) per frame: the config's, else the checkpoint's."""
    low = vl.min_pixels if config.min_pixels is None else config.min_pixels
    high = vl.max_pixels if config.max_pixels is None else config.max_pixels
    if low > high:
        raise ValueError(f"min_pixels {low} > max_pixels {high} (config or checkpoint defaults)")
    return low, high


def sampling_key(vl, config: InferConfig) -> tuple:
    """Everything besides the file that a query's sampled frames depend on (the frame cache's key)."""
    factor = int(vl.vision.patch_size) * int(vl.vision.spatial_merge_size)
    return (config.num_frames, float(config.alpha), float(config.probe_fps), bool(config.decode_resize),
            factor, *pixel_bounds(vl, config))


def sample_frames(vl, video_path, config: InferConfig, cache=None):
    """Frames of the video for the model: SAA (`alpha > 0`) or uniform times, resized in the decoder
    to the model's frame size when `config.decode_resize`. cache: a `FrameCache` shared by the
    queries of a run (each video decoded once), or None."""
    from tempo_fast.video import probe, saa_sample, smart_resize

    def decode():
        size = None
        if config.decode_resize:
            info = probe(video_path)
            factor = int(vl.vision.patch_size) * int(vl.vision.spatial_merge_size)
            size = smart_resize(info.height, info.width, factor, *pixel_bounds(vl, config))
        return saa_sample(video_path, config.num_frames, alpha=config.alpha, probe_fps=config.probe_fps, size=size)

    return decode() if cache is None else cache.get(video_path, sampling_key(vl, config), decode)


def prepare(vl, video_path, query: str, config: InferConfig, cache=None) -> dict:
    """Decode, sample and preprocess one query: {"prompt": PromptInputs, "decode_s", "preprocess_s"}
    (decode_s: the lookup, or the wait for another worker decoding the same video, on a cache hit).
    cache: a `FrameCache` (see `sample_frames`). Raises FileNotFoundError / VideoError for a
    missing or undecodable video."""
    from tempo_fast.model import build_prompt

    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty string, got {query!r}")
    start = time.perf_counter()
    frames = sample_frames(vl, video_path, config, cache)
    mid = time.perf_counter()
    low, high = pixel_bounds(vl, config)
    with _TOKENIZER_LOCK:  # a fast tokenizer may raise "Already borrowed" when shared by threads
        prompt = build_prompt(vl, frames, query, min_pixels=low, max_pixels=high, device=vl.device)
    return {"prompt": prompt, "decode_s": mid - start, "preprocess_s": time.perf_counter() - mid}


def query_seed(seed: int, *parts) -> int:
    """A per-query seed from (seed, video id = file stem, query): independent of query order, so
    reruns, shards and `ground` on the same video and query sample the same answers."""
    return (seed * 1_000_003 + zlib.crc32("\x00".join(map(str, parts)).encode())) % (2**63)


class Grounder:
    """A model with its greedy and sampling engines; `answer_many` turns prepared queries into results."""

    def __init__(self, vl, config: InferConfig):
        from tempo_fast.rollout import RolloutEngine, SamplingConfig

        self.vl, self.config = vl, config
        self.greedy = RolloutEngine(vl, SamplingConfig(max_new_tokens=config.max_new_tokens, greedy=True))
        self.sampler = RolloutEngine(vl, SamplingConfig(max_new_tokens=config.max_new_tokens,
                                                        temperature=config.temperature, top_p=config.top_p,
                                                        top_k=config.top_k))

    def answer(self, prepared: dict, seed: int) -> dict:
        """`answer_many` of one query."""
        return self.answer_many([prepared], [seed])[0]

    def answer_many(self, prepared: list, seeds: list) -> list:
        """The result dicts of `ground` (without decode/preprocess timing) plus "tokens", for B
        prepared queries answered in one batch (one prefill, one decode loop). Each query samples
        from its own generator seeded by its seed, so its answer does not depend on the batch.
        "timing" holds the batch's prefill_s and generate_s (decode steps), the same in every result."""
        from tempo_fast.rewards import parse_answer

        config = self.config
        prompts = [p["prompt"] for p in prepared]
        if len(seeds) != len(prompts):
            raise ValueError(f"Grounder.answer_many: {len(prompts)} queries but {len(seeds)} seeds")
        if config.num_samples:
            # Row 0 greedy, the rest sampled: one prefill for the answer and its candidates.
            generators = [torch.Generator(device=self.vl.device).manual_seed(s) for s in seeds]
            rollouts = self.sampler.generate_batch(prompts, 1 + config.num_samples, generators=generators,
                                                   greedy_rows=1)
        else:
            rollouts = self.greedy.generate_batch(prompts, 1)
        results = []
        for prompt, rollout in zip(prompts, rollouts):
            texts = list(rollout.texts)
            answers = [parse_answer(t, prompt.duration) for t in texts]
            weights = None
            if config.score == "likelihood":
                weights = answer_likelihoods(rollout.logprobs, rollout.completion_mask)
            windows = merge_candidates(answers, weights, merge_iou=config.merge_iou, max_windows=config.max_windows)
            sampled = answers[1:]
            results.append({
                "windows": windows, "refused": answers[0].refused,
                "refusal_score": round(sum(a.refused for a in sampled) / len(sampled), 4) if sampled else 0.0,
                "answer": texts[0], "duration": float(prompt.duration), "tokens": int(rollout.lengths.sum()),
                "timing": {"prefill_s": float(rollout.timing.get("prefill_s", 0.0)),
                           "generate_s": float(rollout.timing.get("decode_s", 0.0))}})
        return results


def ground(video_path, query: str, *, model=None, config: InferConfig | None = None) -> dict:
    """Ground `query` in the video at `video_path`.

    model: a `VLModel`, or a name for `load_model` ("tiny", a checkpoint folder); None: `config.model`.
    Returns {"windows": [[start, end, score], ...], "refused": bool, "refusal_score": float,
    "answer": str (the greedy answer), "duration": float, "timing": {decode_s, preprocess_s,
    prefill_s, generate_s, total_s}}. Raises FileNotFoundError for a missing video, VideoError for
    an undecodable one, ValueError for an empty query.
    """
    config = InferConfig() if config is None else config
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty string, got {query!r}")
    if not os.path.isfile(video_path):
        raise FileNotFoundError(f"video file not found: {video_path}")
    vl = load(model, config)
    start = time.perf_counter()  # the query's time, not the model's loading
    prepared = prepare(vl, video_path, query, config)
    result = Grounder(vl, config).answer(prepared, query_seed(config.seed, Path(video_path).stem, query))
    result.pop("tokens")
    timing = {"decode_s": prepared["decode_s"], "preprocess_s": prepared["preprocess_s"], **result["timing"],
              "total_s": time.perf_counter() - start}
    result["timing"] = {k: round(timing[k], 4) for k in TIMING_KEYS}
    return result
