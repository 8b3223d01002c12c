"""The public scorers: `evaluate_qvhighlights` (the official brief dict), `evaluate_charades`
(R1@0.3/0.5/0.7, mIoU) and `refusal_metrics` (PIR refusals). Rules: `tempo_fast.metrics`."""
from __future__ import annotations

import math

import numpy as np

from .highlights import CLIP_SECONDS, HL_LEVELS, NUM_ANNOTATORS, highlights
from .moments import MR_IOU_THRESHOLDS, MR_LENGTH_RANGES, moment_retrieval
from .records import (MISSING_RULES, NO_PREDICTION, align, check_windows, is_refusal, is_relevant, malformed,
                      pack_windows, pct)

MAX_PRED_WINDOWS = 10
CHARADES_THRESHOLDS = (0.3, 0.5, 0.7)
__all__ = ["CHARADES_THRESHOLDS", "CLIP_SECONDS", "HL_LEVELS", "MAX_PRED_WINDOWS", "MISSING_RULES",
           "MR_IOU_THRESHOLDS", "MR_LENGTH_RANGES", "NUM_ANNOTATORS", "evaluate_charades",
           "evaluate_qvhighlights", "refusal_metrics"]


def _ground_truth_windows(gts, qids) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth windows `[Q, G, 2]` and counts; every query needs one well-formed window."""
    gt, n_gt = pack_windows(gts, "relevant_windows", qids, None, "ground truth")
    bad = malformed(gt, n_gt)
    if bad.any():
        q, n = np.argwhere(bad)[0]
        raise ValueError(f"ground truth qid {qids[q]!r}: window {gt[q, n, :2].tolist()} must have finite start <= end")
    if (n_gt == 0).any():
        qid = qids[int(np.argmin(n_gt))]
        raise ValueError(f"ground truth qid {qid!r} has no relevant window: score irrelevant "
                         "queries with refusal_metrics")
    return gt[..., :2], n_gt


def evaluate_qvhighlights(predictions, ground_truth, *, missing: str = "error", strict: bool = False) -> dict[str, float]:
    """The official QVHighlights scorer's brief dict (percentages, two decimals).

    predictions / ground_truth: lists of records or JSONL paths (layouts in `tempo_fast.metrics`).
    Moment-retrieval keys come when the predictions carry `pred_relevant_windows`, highlight
    keys when every prediction carries `pred_saliency_scores`. missing: "error" | "miss" | "skip".
    strict: raise on a malformed predicted window (end < start, non-finite) instead of scoring it
    the official way with one `MalformedWindowWarning`.
    """
    preds, gts = align(predictions, ground_truth, missing)
    qids = [g["qid"] for g in gts]
    given = [p for p in preds if p is not NO_PREDICTION]
    has_saliency = ["pred_saliency_scores" in p for p in given]
    out = {}
    if any(("pred_relevant_windows" in p) or ("refused" in p) for p in given):
        pred, n_pred = pack_windows(preds, "pred_relevant_windows", qids, MAX_PRED_WINDOWS, "predicted")
        check_windows(pred, n_pred, qids, "predicted", strict=strict)
        out.update(moment_retrieval(pred, n_pred, *_ground_truth_windows(gts, qids)))
    if all(has_saliency):
        out.update(highlights(preds, gts, qids))
    elif any(has_saliency):
        qid = given[has_saliency.index(False)]["qid"]
        raise ValueError(f"prediction qid {qid!r} has no pred_saliency_scores while others have them")
    if not out:
        raise ValueError("predictions carry neither pred_relevant_windows nor pred_saliency_scores")
    return out


def _true_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of windows `a[Q, 2]` with each of `b[Q, G, 2]` → `[Q, G]`; 0 where the union is not > 0
    or a bound is not finite (a reversed window has no intersection)."""
    left = np.maximum(a[:, None, 0], b[..., 0])
    right = np.minimum(a[:, None, 1], b[..., 1])
    with np.errstate(invalid="ignore"):
        inter = np.clip(right - left, 0, None)
        union = (a[:, None, 1] - a[:, None, 0]) + (b[..., 1] - b[..., 0]) - inter
        ok = np.isfinite(inter) & np.isfinite(union) & (union > 0)
    return np.divide(inter, union, out=np.zeros_like(inter), where=ok)


def evaluate_charades(predictions, ground_truth, *, missing: str = "error", strict: bool = False) -> dict[str, float]:
    """R1@0.3/0.5/0.7 of the first listed window and its mean IoU, in percent (two decimals).

    The IoU is the true IoU with the best-overlapping ground-truth window (Charades-STA has one);
    an empty window list, a refusal or a malformed first window (end < start, non-finite; warned
    about once, or raised under `strict`) counts as IoU 0.
    """
    preds, gts = align(predictions, ground_truth, missing)
    qids = [g["qid"] for g in gts]
    pred, n_pred = pack_windows(preds, "pred_relevant_windows", qids, 1, "predicted")
    check_windows(pred, n_pred, qids, "predicted", strict=strict)
    gt, n_gt = _ground_truth_windows(gts, qids)
    gt_valid = np.arange(gt.shape[1]) < n_gt[:, None]
    iou = np.where(gt_valid, _true_iou(pred[:, 0, :2], gt), 0.0).max(axis=1)
    iou = np.where((n_pred > 0) & ~malformed(pred, n_pred)[:, 0], iou, 0.0)
    out = {f"R1@{t}": pct(np.mean(iou >= t)) for t in CHARADES_THRESHOLDS}
    out["mIoU"] = pct(np.mean(iou))
    return out


def refusal_metrics(predictions, ground_truth, *, missing: str = "error") -> dict[str, float]:
    """PIR refusal scores in percent: `refusal_acc` (irrelevant queries refused) and
    `false_refusal_rate` (relevant queries refused), with the query counts, plus
    `refusal_acc_<kind>` for each PIR `relevance` kind present ("irrelevant", "partial").
    A rate over no query is NaN. Refusal and relevance are defined by `is_refusal` and `is_relevant`."""
    preds, gts = align(predictions, ground_truth, missing)
    refused = np.array([is_refusal(p) for p in preds], dtype=bool)
    relevant = np.array([is_relevant(g) for g in gts], dtype=bool)

    def rate(mask):
        return pct(np.mean(refused[mask])) if mask.any() else math.nan

    out = {"refusal_acc": rate(~relevant), "false_refusal_rate": rate(relevant),
           "num_irrelevant": int((~relevant).sum()), "num_relevant": int(relevant.sum())}
    kinds = np.array([str(g.get("relevance", "")) for g in gts])
    for kind in sorted(set(kinds[~relevant]) - {""}):
        out[f"refusal_acc_{kind}"] = rate(kinds == kind)
    return out
