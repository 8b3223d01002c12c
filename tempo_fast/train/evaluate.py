"""Held-out evaluation of a grounding model, and the trivial baselines it must beat.

`evaluate_grounding(vl, records, data_cfg=...)` answers every record greedily (`tempo_fast.rollout.
RolloutEngine`, `batch_size` prompts per prefill), parses each answer with
`tempo_fast.rewards.parse_answer` (windows clipped to the video's duration) and scores the answers;
with a model it also reads the model's P(none) per record (`refusal_probabilities`: the probability
of the refusal at the answer's decision token, the first token where `<answer>none</answer>` and a
window answer differ, after the prompt and their common prefix, teacher-forced as in SFT) and
scores it as `refusal_auc`; with `bootstrap=n` it adds seeded 95% intervals (`ci`) of every metric
(`tempo_fast.train.stats`);
`baselines(records, train=...)` scores answers that need no model:
    "whole"   the whole video as the window (never refuses),
    "random"  one window with both ends uniform in [0, duration], seeded,
    "refuse"  always refuse,
    "prior"   (with `train` records) one fixed window in seconds for every query, the one of best mean
              IoU over train's relevant records (`best_constant_window`, a 0.1 s grid), clipped to each
              video: what a model that ignores both the video and the query can learn.

`swap_videos(records)` asks every relevant query of another video: a model's score there is what it
gets from the query text alone, the part of its score that is not grounding.

Metrics (`score_answers`, all in percent with two decimals, as `tempo-fast eval` prints them):
    R1@0.5, R1@0.7, mIoU   over the relevant records: the IoU of the answer's FIRST window with the
                           best-overlapping ground-truth window; a refusal or an answer without a
                           readable window counts as IoU 0 (`tempo_fast.metrics.evaluate_charades`);
    refusal_acc            over the irrelevant and partially irrelevant records: the share refused;
    false_refusal          over the relevant records: the share refused.
    refusal_auc            over all records: the AUC of P(none) for telling negatives from relevant
                           records (50: no better than chance; NaN without both kinds or P(none)).
"Refused" is the parser's `Answer.refused` (an explicit `none` or a refusing phrase); an unreadable
answer is neither a window nor a refusal. A rate over no record is NaN. The dict also holds the
record counts (`num_relevant`, `num_negative`), the refusal accuracy per negative kind
(`refusal_acc_irrelevant`, `refusal_acc_partial`) and the share of well-formed answers
(`well_formed`, over all records; NaN for baselines).

Prompts are built as in training (`tempo_fast.train.data.sample_frames` and `model.build_prompt`
under the same `DataConfig`: sampling, num_frames, alpha, min/max pixels), frames decoded once per
video.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

METRIC_KEYS = ("R1@0.5", "R1@0.7", "mIoU", "refusal_acc", "false_refusal")
BASELINES = ("whole", "random", "refuse")


def _pct(numerator: float, denominator: int) -> float:
    return round(100.0 * numerator / denominator, 2) if denominator else math.nan


def _duration(record) -> float:
    duration = record.duration
    if duration is None or not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
        raise ValueError(f"evaluate: record {record.id!r} needs a finite duration > 0 seconds, got {duration!r}")
    return float(duration)


def score_answers(records: Sequence, answers: Sequence, p_none: Sequence | None = None) -> dict:
    """The metrics of the module docstring for `answers[i]` (a `rewards.Answer`) to `records[i]`;
    `refusal_auc` from `p_none[i]`, the model's P(none) (NaN when not given)."""
    from tempo_fast.metrics import evaluate_charades
    from tempo_fast.train.stats import roc_auc

    records, answers = list(records), list(answers)
    if len(records) != len(answers):
        raise ValueError(f"score_answers: {len(records)} records but {len(answers)} answers")
    relevant = [i for i, r in enumerate(records) if r.relevance == "relevant"]
    for i in relevant:
        if not records[i].windows:
            raise ValueError(f"score_answers: relevant record {records[i].id!r} has no ground-truth window")
    relevant_set = set(relevant)
    negative = [i for i in range(len(records)) if i not in relevant_set]
    out = {"R1@0.5": math.nan, "R1@0.7": math.nan, "mIoU": math.nan}
    if relevant:
        preds = [{"qid": i, "pred_relevant_windows": [list(w) for w in answers[i].windows[:1]]} for i in relevant]
        gts = [{"qid": i, "relevant_windows": [list(w) for w in records[i].windows]} for i in relevant]
        charades = evaluate_charades(preds, gts)
        out.update({k: charades[k] for k in ("R1@0.5", "R1@0.7", "mIoU")})
    out["refusal_acc"] = _pct(sum(answers[i].refused for i in negative), len(negative))
    out["false_refusal"] = _pct(sum(answers[i].refused for i in relevant), len(relevant))
    auc = math.nan if p_none is None else roc_auc(list(p_none), [r.relevance != "relevant" for r in records])
    out["refusal_auc"] = math.nan if math.isnan(auc) else round(auc, 2)  # (math.nan itself: dicts compare equal)
    out["num_relevant"], out["num_negative"] = len(relevant), len(negative)
    for kind in ("irrelevant", "partial"):
        of_kind = [i for i in negative if records[i].relevance == kind]
        out[f"refusal_acc_{kind}"] = _pct(sum(answers[i].refused for i in of_kind), len(of_kind))
    return out


def best_constant_window(train: Sequence, *, step: float = 0.1) -> tuple[float, float]:
    """The window (start, end) in seconds, ends on a `step` grid, of best mean IoU (each clipped to
    the record's video) with the best-overlapping ground-truth window of train's relevant records."""
    import numpy as np

    from tempo_fast.metrics.moments import official_cross_iou

    relevant = [r for r in train if r.relevance == "relevant" and r.windows]
    if not relevant:
        raise ValueError("best_constant_window: no relevant training record with a window")
    durations = [_duration(r) for r in relevant]
    grid = np.arange(0.0, max(durations) + step / 2, step)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    candidates = np.stack([a[b > a], b[b > a]], axis=-1)                    # [C, 2]
    best = np.zeros(len(candidates))
    for r, duration in zip(relevant, durations):
        iou = official_cross_iou(np.minimum(candidates, duration), np.asarray(r.windows, dtype=float))
        best += np.nan_to_num(iou).max(axis=1)
    i = int(np.argmax(best))
    return round(float(candidates[i, 0]), 6), round(float(candidates[i, 1]), 6)


def baselines(records: Sequence, *, seed: int = 0, bootstrap: int = 0, train: Sequence | None = None) -> dict:
    """{"whole", "random", "refuse"} (+ "prior" with `train`) -> metrics (module docstring) of the
    trivial answers; their P(none) is constant (0, 0, 1, 0), so refusal_auc is 50. bootstrap:
    resamples for `ci` (0: none)."""
    from tempo_fast.rewards import Answer
    from tempo_fast.train.stats import bootstrap_intervals

    records = list(records)
    rng = random.Random(seed)
    whole, rand = [], []
    for record in records:
        duration = _duration(record)
        whole.append(Answer(windows=((0.0, duration),), refused=False, well_formed=True))
        a, b = sorted((rng.uniform(0.0, duration), rng.uniform(0.0, duration)))
        rand.append(Answer(windows=((a, b),), refused=False, well_formed=True))
    refuse = [Answer(windows=(), refused=True, well_formed=True)] * len(records)
    answers = dict(zip(BASELINES, (whole, rand, refuse)))
    if train is not None:
        a, b = best_constant_window(train)
        answers["prior"] = [Answer(windows=((min(a, _duration(r)), min(b, _duration(r))),), refused=False,
                                   well_formed=True) for r in records]
    out = {}
    for name in answers:
        p_none = [1.0 if name == "refuse" else 0.0] * len(records)
        out[name] = {**score_answers(records, answers[name], p_none), "well_formed": math.nan}
        if bootstrap:
            out[name]["ci"] = bootstrap_intervals(records, answers[name], p_none, n=bootstrap, seed=seed)
    return out


def swap_videos(records: Sequence, *, seed: int = 0) -> list:
    """The relevant records, each asked of ANOTHER record's video (a seeded derangement over the
    distinct videos), ground truth unchanged: a model scored on these sees no video evidence for its
    query, so what it still gets right comes from priors of the text alone (e.g. "appears" near the
    start). Records whose video is the only one are left out."""
    import dataclasses

    relevant = [r for r in records if r.relevance == "relevant"]
    videos = sorted({str(r.video_path) for r in relevant})
    if len(videos) < 2:
        return []
    rng = random.Random(seed)
    order = videos[:]
    rng.shuffle(order)
    other = {v: order[(i + 1) % len(order)] for i, v in enumerate(order)}  # a cycle: never itself
    by_path = {str(r.video_path): r for r in relevant}
    return [dataclasses.replace(r, id=f"{r.id}_swapped", video_path=by_path[other[str(r.video_path)]].video_path)
            for r in relevant]


def record_prompts(vl, records: Sequence, data_cfg) -> list:
    """One `PromptInputs` per record (frames decoded once per video), on the model's device; from the
    process-wide cache inside `tempo_fast.train.prompts.shared_prompt_cache()`."""
    from tempo_fast.train.prompts import current_cache

    cache, prompts = current_cache(), []
    for record in records:
        if record.video_path is None:
            raise ValueError(f"evaluate: record {record.id!r} has no video_path (load the annotations with videos_dir)")
        prompts.append(cache.prompt(vl, record.video_path, record.query, data_cfg, vl.device))
    return prompts


def refusal_probabilities(vl, prompts: Sequence, *, batch_size: int = 16) -> list:
    """The model's P(none) for each prompt: the probability of the refusal's token at the answer's
    decision token (module docstring), from one teacher-forced forward per `batch_size` prompts."""
    import torch

    from tempo_fast.rewards import format_answer
    from tempo_fast.train.sft import collate, final_hidden

    tokenizer = vl.tokenizer
    refuse = tokenizer(format_answer(None), add_special_tokens=False)["input_ids"]
    window = tokenizer(format_answer([(1.0, 2.0)]), add_special_tokens=False)["input_ids"]
    k = 0
    while k < min(len(refuse), len(window)) and refuse[k] == window[k]:
        k += 1
    if k == len(refuse):
        raise ValueError("refusal_probabilities: the refusal answer is a prefix of a window answer")
    none_id = int(refuse[k])
    target = tokenizer.decode(refuse)
    model = vl.model
    was_training = bool(model.training)
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                part = list(prompts[start:start + batch_size])
                batch = collate([Sample(p, target) for p in part], vl)
                hidden = final_hidden(model, batch)
                rows = torch.arange(len(part), device=hidden.device)
                at = torch.tensor([p.length - 1 + k for p in part], device=hidden.device)
                logits = vl.lm_head(hidden[rows, at]).float()
                out += torch.softmax(logits, dim=-1)[:, none_id].tolist()
    finally:
        if was_training:
            model.train()
    return out


class Sample:
    """What `sft.collate` reads of a sample: the prompt and the answer text."""

    def __init__(self, prompt, target: str):
        self.prompt, self.target = prompt, target


def evaluate_grounding(vl, records: Sequence, *, data_cfg, max_new_tokens: int = 32, engine=None,
                       prompts: Sequence | Callable | None = None, batch_size: int = 16,
                       refusal_auc: bool | None = None, bootstrap: int = 0, seed: int = 0) -> dict:
    """Greedy answers of `vl` to `records` (relevant, irrelevant and partial mixed), scored.

    engine: anything with `.generate(prompt, 1) -> Rollout`, used through `.generate_many(prompts,
        1)` when it has one (default: a greedy `RolloutEngine` of `batch_size` prompts per prefill).
    prompts: the records' prompts (a list, or a function record -> prompt); default
        `record_prompts(vl, records, data_cfg)`. A prompt needs a `duration` for the parser.
    refusal_auc: read P(none) per record and score it (None: when `vl` has a model and the records
        hold relevant and negative ones), `2 * batch_size` prompts per forward.
    bootstrap: resamples for the 95% intervals in `ci` (0: none), seeded by `seed`.
    Returns the metrics of the module docstring plus `answers` (the texts), `p_none` (or None) and
    `seconds`.
    """
    import time

    import torch

    from tempo_fast.rewards import parse_answer
    from tempo_fast.train.stats import bootstrap_intervals

    records = list(records)
    if not records:
        raise ValueError("evaluate_grounding: no records to evaluate")
    start = time.perf_counter()
    if engine is None:
        engine = _greedy_engine(vl, max_new_tokens, batch_size)
    if prompts is None:
        prompts = record_prompts(vl, records, data_cfg)
    elif callable(prompts):
        prompts = [prompts(record) for record in records]
    prompts = list(prompts)
    if len(prompts) != len(records):
        raise ValueError(f"evaluate_grounding: {len(records)} records but {len(prompts)} prompts")
    model = getattr(vl, "model", None)
    if refusal_auc is None:  # (an AUC needs both kinds)
        refusal_auc = model is not None and len({r.relevance == "relevant" for r in records}) == 2
    was_training = bool(getattr(model, "training", False))
    if model is not None:
        model.eval()
    try:
        with torch.no_grad():
            if hasattr(engine, "generate_many"):
                texts = [rollout.texts[0] for rollout in engine.generate_many(prompts, 1)]
            else:
                texts = [engine.generate(prompt, 1).texts[0] for prompt in prompts]
    finally:
        if was_training:
            model.train()
    p_none = refusal_probabilities(vl, prompts, batch_size=2 * batch_size) if refusal_auc else None
    answers = [parse_answer(text, prompt.duration) for text, prompt in zip(texts, prompts)]
    out = score_answers(records, answers, p_none)
    out["well_formed"] = _pct(sum(a.well_formed for a in answers), len(answers))
    if bootstrap:
        out["ci"] = bootstrap_intervals(records, answers, p_none, n=bootstrap, seed=seed)
    out["answers"] = texts
    out["p_none"] = p_none
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def _greedy_engine(vl, max_new_tokens: int, batch_size: int):
    from tempo_fast.rollout import RolloutEngine, SamplingConfig

    sampling = SamplingConfig(max_new_tokens=max_new_tokens, greedy=True)
    try:
        return RolloutEngine(vl, sampling, batch_size=batch_size)
    except TypeError:  # an engine without batched prompts: one prompt per prefill
        return RolloutEngine(vl, sampling)
