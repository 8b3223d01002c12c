"""Per-record scores of grounding answers, the refusal AUC and seeded bootstrap intervals.

- `record_ious(records, answers)`: the IoU of each relevant record's answer (its FIRST window with
  the best-overlapping ground-truth window; a refusal or no window is 0), the per-record value
  whose mean is `evaluate_charades`' mIoU.
- `roc_auc(scores, positive)`: the area under the ROC curve of `scores` for telling the positive
  records from the others (Mann-Whitney: the chance a random positive scores above a random
  negative, ties counted half), in percent; NaN without both classes.
- `bootstrap_intervals(records, answers, p_none=None, n=1000, seed=0)`: 95% percentile intervals of
  every metric of `tempo_fast.train.evaluate.score_answers` (and of `refusal_auc` when P(none) per
  record is given), resampling records with replacement WITHIN each relevance kind (relevant,
  irrelevant, partial), so every resample has the evaluated set's counts. numpy's PCG64 seeded by
  `seed`: the same inputs give the same intervals.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

KINDS = ("relevant", "irrelevant", "partial")


def _iou(window, truth) -> float:
    (a, b), (c, d) = window, truth
    inter = max(0.0, min(b, d) - max(a, c))
    union = max(b, d) - min(a, c)
    return inter / union if union > 0 else 0.0


def record_ious(records: Sequence, answers: Sequence) -> np.ndarray:
    """float64 [number of relevant records]: each relevant record's IoU (module docstring)."""
    out = []
    for record, answer in zip(records, answers):
        if record.relevance != "relevant":
            continue
        windows = list(answer.windows)[:1]
        out.append(max(_iou(windows[0], gt) for gt in record.windows) if windows and not answer.refused else 0.0)
    return np.asarray(out, dtype=np.float64)


def roc_auc(scores, positive) -> float:
    """AUC in percent of `scores` (higher = more positive) for the boolean `positive` labels."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return 100.0 * u / (n_pos * n_neg)


def _metrics(iou: np.ndarray, refused_rel: np.ndarray, refused_irr: np.ndarray, refused_par: np.ndarray,
             p_rel: np.ndarray | None, p_neg: np.ndarray | None) -> dict:
    def mean(x):
        return 100.0 * float(np.mean(x)) if len(x) else math.nan

    negatives = np.concatenate([refused_irr, refused_par])
    out = {"R1@0.5": mean(iou >= 0.5), "R1@0.7": mean(iou >= 0.7), "mIoU": mean(iou),
           "refusal_acc": mean(negatives), "false_refusal": mean(refused_rel),
           "refusal_acc_irrelevant": mean(refused_irr), "refusal_acc_partial": mean(refused_par)}
    if p_rel is not None:
        out["refusal_auc"] = roc_auc(np.concatenate([p_neg, p_rel]),
                                     np.r_[np.ones(len(p_neg), bool), np.zeros(len(p_rel), bool)])
    return out


def bootstrap_intervals(records: Sequence, answers: Sequence, p_none: Sequence | None = None, *, n: int = 1000,
                        seed: int = 0, level: float = 0.95) -> dict:
    """{metric: [low, high]} percentile intervals in percent, two decimals (module docstring)."""
    if n < 1:
        raise ValueError(f"bootstrap_intervals: n must be >= 1, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_intervals: level must be in (0, 1), got {level}")
    records, answers = list(records), list(answers)
    if len(records) != len(answers) or (p_none is not None and len(p_none) != len(records)):
        raise ValueError(f"bootstrap_intervals: {len(records)} records, {len(answers)} answers, "
                         f"{None if p_none is None else len(p_none)} P(none)")
    kinds = np.array([r.relevance for r in records])
    refused = np.array([bool(a.refused) for a in answers])
    p = None if p_none is None else np.asarray(p_none, dtype=np.float64)
    iou = record_ious(records, answers)
    idx = {k: np.flatnonzero(kinds == k) for k in KINDS}
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = []
    for _ in range(n):
        pick = {k: rng.integers(0, len(v), len(v)) if len(v) else np.zeros(0, int) for k, v in idx.items()}
        rel = pick["relevant"]
        neg_rows = np.concatenate([idx["irrelevant"][pick["irrelevant"]], idx["partial"][pick["partial"]]])
        draws.append(_metrics(iou[rel], refused[idx["relevant"][rel]], refused[idx["irrelevant"][pick["irrelevant"]]],
                              refused[idx["partial"][pick["partial"]]],
                              None if p is None else p[idx["relevant"][rel]], None if p is None else p[neg_rows]))
    tail = 100.0 * (1 - level) / 2
    out = {}
    for key in draws[0]:
        values = np.array([d[key] for d in draws], dtype=np.float64)
        if np.isnan(values).all():
            out[key] = [math.nan, math.nan]
        else:
            lo, hi = np.nanpercentile(values, [tail, 100.0 - tail])
            out[key] = [round(float(lo), 2), round(float(hi), 2)]
    return out
