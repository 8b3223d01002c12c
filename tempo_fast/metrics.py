"""Grounding metrics compatible with the official scorers, vectorised with numpy.

`evaluate_qvhighlights` returns the brief dict of the official QVHighlights / Moment-DETR
standalone scorer (same keys, same numbers to two decimals) without its per-query Python loops
and process pools; `evaluate_charades` gives the usual Charades-STA numbers; `refusal_metrics`
scores PIR refusals. Inputs are lists of dicts or paths to JSONL files.

Prediction record: `qid`, `vid`, `pred_relevant_windows` `[[start, end, score], ...]` (seconds;
a window written `[start, end]` has no score and ranks after the scored ones, in listed order),
optional `pred_saliency_scores` (one float per 2-second clip), optional `refused`.
A prediction is a **refusal** when `"refused": true`, or, without that key, when
`pred_relevant_windows` is empty (or absent). A refusal is a miss in the grounding metrics.
A ground-truth query is **irrelevant** (PIR) when its `relevance` is not "relevant", when it
says `"relevant": false`, or when it has no window; only `refusal_metrics` scores those.

What the official scorer does, reproduced here (see /work/shared/data/README.md):
- R1@t: the first listed window against the ground-truth window of highest IoU (first on ties);
  the IoU is then taken with the windows' hull as union, as the official code does.
- mAP: the first 10 listed windows, stably sorted by decreasing score; at each IoU threshold
  0.50..0.95 a prediction is matched to the unmatched ground-truth window of highest IoU (true
  positive if IoU >= threshold); all-point (VOC) interpolated AP per query, averaged over
  queries, then over thresholds. short/middle/long keep the ground-truth windows of length
  (0, 10], (10, 30], (30, 150] and the queries that still have one.
- Highlights: `int(duration / 2)` clips, clips outside `relevant_clip_ids` score 0; positive for
  an annotator when its score is >= 2/3/4 (Fair/Good/VeryGood); predicted scores are cut or
  zero-padded to the clip count. Hit1: the top-scored clip (first on ties) is positive for any
  annotator. mAP: per query and annotator, the mean of the interpolated precision at each
  distinct recall level (tied scores form one level); all-negative gives 0, all-positive 1.
Sums run in the official order and IoU ties are visited in the order numpy's argsort gives the
official code (the same call is made here), so per-query numbers match the official ones bit for
bit (checked on random inputs with many ties).

Where the official scorer crashes or is undefined, the rule here:
- predictions missing for some ground-truth qids: `missing="error"` (default) raises naming
  them, `"miss"` scores them as empty predictions, `"skip"` drops those queries (the official
  `match_number=False`); predictions for unknown qids raise under "error" and are dropped else;
- an empty window list (or a refusal): AP 0 and R1 IoU 0 (the official scorer crashes in R1);
  an empty saliency list: all clips score 0 and Hit1 misses;
- NaN scores (windows or clips) rank below every other score;
- two windows with union 0 have IoU 0 (the official gives NaN);
- non-finite or reversed (end < start) windows raise, naming the qid.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

MR_IOU_THRESHOLDS = tuple(float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10))
MR_LENGTH_RANGES = {"short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0)}
MAX_PRED_WINDOWS = 10
CLIP_SECONDS = 2
HL_LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}
NUM_ANNOTATORS = 3
CHARADES_THRESHOLDS = (0.3, 0.5, 0.7)
MISSING_RULES = ("error", "miss", "skip")
# stands in for the prediction of a query scored under missing="miss"
_NO_PREDICTION = MappingProxyType({"pred_relevant_windows": [], "pred_saliency_scores": []})


def _pct(value: float) -> float:
    """A fraction as a percentage with two decimals, formatted the way the official scorer does."""
    return float(f"{100 * value:.2f}")


# ---------------------------------------------------------------- records in and out


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = ("qid",)) -> list[dict]:
    """One JSON object per non-blank line, each with the `required` keys; errors name the file
    and line number."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            absent = [key for key in required if key not in record]
            if absent:
                raise ValueError(f"{path}:{line_no}: record has no {absent[0]!r}")
            records.append(record)
    return records


def _records(data, what: str) -> list[Mapping]:
    if isinstance(data, (str, os.PathLike)):
        return read_jsonl(data)
    records = list(data)
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"{what}[{i}] must be a dict, got {type(record).__name__}")
        if "qid" not in record:
            raise ValueError(f"{what}[{i}] has no 'qid'")
    return records


def _by_qid(records: list[Mapping], what: str) -> dict:
    out = {}
    for record in records:
        if record["qid"] in out:
            raise ValueError(f"{what} has qid {record['qid']!r} twice")
        out[record["qid"]] = record
    return out


def is_refusal(prediction: Mapping) -> bool:
    """`"refused": true`, or without that key an empty `pred_relevant_windows`."""
    if "refused" in prediction:
        return bool(prediction["refused"])
    return len(prediction.get("pred_relevant_windows") or []) == 0


def _align(predictions, ground_truth, missing: str) -> tuple[list[Mapping], list[Mapping]]:
    """Pair prediction and ground-truth records by qid, in prediction order (the official order)."""
    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be one of {MISSING_RULES}, got {missing!r}")
    preds = _by_qid(_records(predictions, "predictions"), "predictions")
    gts = _by_qid(_records(ground_truth, "ground_truth"), "ground_truth")
    unknown = [q for q in preds if q not in gts]
    absent = [q for q in gts if q not in preds]
    if missing == "error" and (unknown or absent):
        parts = []
        if absent:
            parts.append(f"{len(absent)} ground-truth qids have no prediction (first: {absent[:5]})")
        if unknown:
            parts.append(f"{len(unknown)} predicted qids are not in the ground truth (first: {unknown[:5]})")
        raise ValueError("; ".join(parts) + "; pass missing='miss' or 'skip' to score anyway")
    qids = [q for q in preds if q in gts]
    if missing == "miss":
        qids += absent
    if not qids:
        raise ValueError("no query is both predicted and in the ground truth")
    return [preds.get(q, _NO_PREDICTION) for q in qids], [gts[q] for q in qids]


def _pack_windows(records: list[Mapping], key: str, qids: list, limit: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Windows `[[s, e(, score)], ...]` of each record as a NaN-padded `[Q, N, 3]` array and counts `[Q]`."""
    flat, counts = [], []
    for record, qid in zip(records, qids):
        windows = [] if record.get("refused") else record.get(key)
        if windows is None:
            raise ValueError(f"{what} qid {qid!r} has no {key!r}")
        windows = list(windows)[:limit]
        for w in windows:
            if not isinstance(w, (list, tuple)) or len(w) not in (2, 3):
                raise ValueError(f"{what} qid {qid!r}: a window must be [start, end] or [start, end, score], got {w!r}")
            flat.append((w[0], w[1], w[2] if len(w) == 3 else math.nan))
        counts.append(len(windows))
    counts = np.asarray(counts, dtype=np.int64)
    width = max(int(counts.max(initial=0)), 1)
    out = np.full((len(records), width, 3), np.nan)
    rows = np.repeat(np.arange(len(records)), counts)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, cols] = np.asarray(flat, dtype=np.float64).reshape(-1, 3)
    valid = np.arange(width) < counts[:, None]
    bad = valid & ~(np.isfinite(out[..., 0]) & np.isfinite(out[..., 1]) & (out[..., 1] >= out[..., 0]))
    if bad.any():
        q, n = np.argwhere(bad)[0]
        raise ValueError(f"{what} qid {qids[q]!r}: window {out[q, n, :2].tolist()} must have finite start <= end")
    return out, counts


# ---------------------------------------------------------------- shared numerics


def _cross_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of windows `a[..., N, 2]` with `b[..., M, 2]` → `[..., N, M]`; 0 where the union is 0."""
    left = np.maximum(a[..., :, None, 0], b[..., None, :, 0])
    right = np.minimum(a[..., :, None, 1], b[..., None, :, 1])
    inter = np.clip(right - left, 0, None)
    union = (a[..., :, None, 1] - a[..., :, None, 0]) + (b[..., None, :, 1] - b[..., None, :, 0]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _sum_selected(values: np.ndarray, selected: np.ndarray, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sum of `values` where `selected`, added as `np.sum` adds the compacted 1-D
    array (pairwise from 8 terms on), so results equal the official per-query sums bit for bit.
    Returns (sums, counts)."""
    if reverse:
        values, selected = values[:, ::-1], selected[:, ::-1]
    order = np.argsort(~selected, axis=1, kind="stable")
    compact = np.take_along_axis(values, order, axis=1)
    counts = selected.sum(axis=1)
    sums = np.zeros(len(values))
    for n in np.unique(counts):
        if n > 0:
            rows = counts == n
            sums[rows] = np.add.reduce(compact[rows, :n], axis=1)
    return sums, counts


def _descending_order(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Stable order by decreasing score along the last axis: NaN after every number, padding last."""
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.lexsort((key, ~valid), axis=-1)


# ---------------------------------------------------------------- moment retrieval


def _visit_order(iou: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """Rank `[Q, P, G]` of each ground-truth window in the order the official matcher visits them,
    `iou.argsort()[::-1]` over the query's own windows. numpy's argsort is not stable for most
    lengths, so tied IoUs are ranked by that very call, made on rows of the same length."""
    rank = np.full(iou.shape, iou.shape[2], dtype=np.int64)
    for g in np.unique(n_gt):
        rows = n_gt == g
        order = np.argsort(iou[rows][..., :g], axis=-1)[..., ::-1]
        sub = np.empty(order.shape, dtype=np.int64)
        np.put_along_axis(sub, order, np.broadcast_to(np.arange(g), order.shape), axis=-1)
        rank[rows, :, :g] = sub
    return rank


def _detection_ap(pred: np.ndarray, n_pred: np.ndarray, gt: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """All-point interpolated AP `[Q, T]` of scored windows `pred[Q, P, 3]` (first `n_pred` valid)
    against `gt[Q, G, 2]` (first `n_gt` valid, at least one)."""
    num_q, width = pred.shape[:2]
    thresholds = np.asarray(MR_IOU_THRESHOLDS)
    pred_valid = np.arange(width) < n_pred[:, None]
    order = _descending_order(pred[..., 2], pred_valid)
    pred = np.take_along_axis(pred, order[..., None], axis=1)
    iou = _cross_iou(pred[..., :2], gt)                                  # [Q, P, G]
    rank = _visit_order(iou, n_gt)                                       # padding ranks last
    never = gt.shape[1]
    locked = np.zeros((num_q, len(thresholds), gt.shape[1]), dtype=bool)
    tp = np.zeros((num_q, len(thresholds), width), dtype=bool)
    rows = np.arange(num_q)[:, None]
    cols = np.arange(len(thresholds))[None, :]
    for p in range(width):
        # the first unmatched window in visiting order is the unmatched one of highest IoU
        candidates = np.where(locked, never, rank[:, None, p, :])       # [Q, T, G]
        best = candidates.argmin(axis=2)
        hit = (candidates[rows, cols, best] < never) & (iou[rows, p, best] >= thresholds) & pred_valid[:, p, None]
        locked[rows, cols, best] |= hit
        tp[:, :, p] = hit
    fp = pred_valid[:, None, :] & ~tp
    tp_sum = np.cumsum(tp, axis=2).astype(np.float64)
    fp_sum = np.cumsum(fp, axis=2).astype(np.float64)
    recall = tp_sum / n_gt[:, None, None]
    total = tp_sum + fp_sum
    precision = np.divide(tp_sum, total, out=np.zeros_like(tp_sum), where=total > 0)
    pad = np.zeros((num_q, len(thresholds), 1))
    mprec = np.concatenate([pad, precision, pad], axis=2)
    mrec = np.concatenate([pad, recall, pad + 1], axis=2)
    mprec = np.maximum.accumulate(mprec[..., ::-1], axis=2)[..., ::-1]
    changed = mrec[..., 1:] != mrec[..., :-1]
    terms = (mrec[..., 1:] - mrec[..., :-1]) * mprec[..., 1:]
    sums, _ = _sum_selected(terms.reshape(-1, width + 1), changed.reshape(-1, width + 1))
    return np.where(n_pred[:, None] > 0, sums.reshape(num_q, len(thresholds)), 0.0)


def _r1_iou(first: np.ndarray, has_pred: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray) -> np.ndarray:
    """IoU `[Q]` of each first window with its best-overlapping ground-truth window, hull as union."""
    iou = np.where(gt_valid, _cross_iou(first[:, None, :], gt)[:, 0, :], -np.inf)
    target = gt[np.arange(len(gt)), iou.argmax(axis=1)]
    inter = np.maximum(0, np.minimum(first[:, 1], target[:, 1]) - np.maximum(first[:, 0], target[:, 0]))
    hull = np.maximum(first[:, 1], target[:, 1]) - np.minimum(first[:, 0], target[:, 0])
    paired = np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)
    return np.where(has_pred, paired, 0.0)


def _moment_retrieval(preds: list[Mapping], gts: list[Mapping], qids: list) -> dict:
    pred, n_pred = _pack_windows(preds, "pred_relevant_windows", qids, MAX_PRED_WINDOWS, "predictions")
    gt, n_gt = _pack_windows(gts, "relevant_windows", qids, None, "ground truth")
    if (n_gt == 0).any():
        qid = qids[int(np.argmin(n_gt))]
        raise ValueError(f"ground truth qid {qid!r} has no relevant window: score irrelevant "
                         "queries with refusal_metrics")
    gt = gt[..., :2]
    gt_valid = np.arange(gt.shape[1]) < n_gt[:, None]
    first = np.array([list(p["pred_relevant_windows"][0][:2]) if n else [0.0, 0.0]
                      for p, n in zip(preds, n_pred)], dtype=np.float64).reshape(-1, 2)
    r1 = _r1_iou(first, n_pred > 0, gt, gt_valid)
    full_ap = _detection_ap(pred, n_pred, gt, n_gt).mean(0)
    out = {"MR-full-mAP": _pct(np.mean(full_ap)),
           "MR-full-mAP@0.5": _pct(full_ap[0]), "MR-full-mAP@0.75": _pct(full_ap[5])}
    length = gt[..., 1] - gt[..., 0]
    for name, (low, high) in MR_LENGTH_RANGES.items():
        in_range = gt_valid & (length > low) & (length <= high)
        keep = in_range.any(axis=1)
        if not keep.any():
            out[f"MR-{name}-mAP"] = 0.0
            continue
        # the windows in range, moved to the front in their listed order
        order = np.argsort(~in_range[keep], axis=1, kind="stable")
        gt_range = np.take_along_axis(gt[keep], order[..., None], axis=1)
        ap = _detection_ap(pred[keep], n_pred[keep], gt_range, in_range[keep].sum(axis=1)).mean(0)
        out[f"MR-{name}-mAP"] = _pct(np.mean(ap))
    out["MR-full-R1@0.5"] = _pct(np.mean(r1 >= 0.5))
    out["MR-full-R1@0.7"] = _pct(np.mean(r1 >= 0.7))
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- highlight detection


def _gt_saliency(gts: list[Mapping], qids: list) -> tuple[np.ndarray, np.ndarray]:
    """Annotator scores `[Q, C, 3]` over every 2-second clip (0 outside relevant clips), clip counts `[Q]`."""
    for g, qid in zip(gts, qids):
        for key in ("duration", "relevant_clip_ids", "saliency_scores"):
            if g.get(key) is None:
                raise ValueError(f"ground truth qid {qid!r} has no {key!r}, needed to score pred_saliency_scores")
    n_clips = np.array([int(g["duration"] / CLIP_SECONDS) for g in gts], dtype=np.int64)
    out = np.zeros((len(gts), max(int(n_clips.max(initial=0)), 1), NUM_ANNOTATORS))
    for q, (g, qid) in enumerate(zip(gts, qids)):
        if n_clips[q] < 1:
            raise ValueError(f"ground truth qid {qid!r}: duration {g['duration']!r} is shorter than one clip")
        ids = np.asarray(g["relevant_clip_ids"], dtype=np.int64)
        scores = np.asarray(g["saliency_scores"], dtype=np.float64).reshape(-1, NUM_ANNOTATORS) if len(ids) else np.zeros((0, NUM_ANNOTATORS))
        if len(ids) != len(scores) or (len(ids) and (ids.min() < 0 or ids.max() >= n_clips[q])):
            raise ValueError(f"ground truth qid {qid!r}: relevant_clip_ids {ids.tolist()} must index the "
                             f"{n_clips[q]} clips and match the {len(scores)} saliency_scores rows")
        out[q, ids] = scores
    return out, n_clips


def _ranked_ap(scores: np.ndarray, valid: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Interpolated AP (official `get_ap`) of clip scores `[Q, C]` for labels `[Q, C, K]` → `[Q, K]`."""
    order = _descending_order(scores, valid)
    s = np.take_along_axis(scores, order, axis=1)
    v = np.take_along_axis(valid, order, axis=1)
    y = np.take_along_axis(positive, order[..., None], axis=1)
    same_as_next = np.zeros_like(v)
    same_as_next[:, :-1] = v[:, 1:] & ((s[:, 1:] == s[:, :-1]) | (np.isnan(s[:, 1:]) & np.isnan(s[:, :-1])))
    block_end = (v & ~same_as_next)[..., None]
    tp = np.cumsum(y, axis=1)
    precision = tp / np.arange(1, s.shape[1] + 1)[None, :, None]
    interp = np.maximum.accumulate(np.where(block_end, precision, 0.0)[:, ::-1], axis=1)[:, ::-1]
    tp_at_end = np.maximum.accumulate(np.where(block_end, tp, 0), axis=1)
    prev_end = np.concatenate([np.zeros_like(tp_at_end[:, :1]), tp_at_end[:, :-1]], axis=1)
    level = block_end & (tp > prev_end)
    num_q, width, k = y.shape

    def rows(a):  # [Q, C, K] → [Q*K, C]
        return a.transpose(0, 2, 1).reshape(num_q * k, width)

    sums, counts = _sum_selected(rows(interp), rows(level), reverse=True)
    ap = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).reshape(num_q, k)
    n_pos, n_valid = positive.sum(axis=1), valid.sum(axis=1)[:, None]
    return np.where(n_pos == 0, 0.0, np.where(n_pos == n_valid, 1.0, ap))


def _highlights(preds: list[Mapping], gts: list[Mapping], qids: list) -> dict:
    gt_scores, n_clips = _gt_saliency(gts, qids)
    raw = [np.asarray(p["pred_saliency_scores"], dtype=np.float64).ravel() for p in preds]
    n_raw = np.array([len(r) for r in raw], dtype=np.int64)
    width = max(int(n_raw.max(initial=0)), gt_scores.shape[1])
    scores = np.zeros((len(raw), width))
    raw_valid = np.arange(width) < n_raw[:, None]
    scores[raw_valid] = np.concatenate(raw)
    clip_valid = np.arange(width) < n_clips[:, None]
    top = np.where(raw_valid, np.nan_to_num(scores, nan=-np.inf), -np.inf).argmax(axis=1)
    has_top = (n_raw > 0) & (top < n_clips)
    scores = np.where(clip_valid, scores, 0.0)  # cut or zero-padded to each video's clip count
    gt_full = np.zeros((len(gts), width, NUM_ANNOTATORS))
    gt_full[:, :gt_scores.shape[1]] = gt_scores
    positive = np.concatenate([gt_full >= m for m in HL_LEVELS.values()], axis=2)  # [Q, C, levels*3]
    top_positive = positive[np.arange(len(gts)), np.minimum(top, width - 1)] & has_top[:, None]
    ap = _ranked_ap(scores, clip_valid, positive & clip_valid[..., None])  # one sort for all levels
    out = {}
    for i, name in enumerate(HL_LEVELS):
        cols = slice(i * NUM_ANNOTATORS, (i + 1) * NUM_ANNOTATORS)
        out[f"HL-min-{name}-mAP"] = _pct(np.mean(np.ascontiguousarray(ap[:, cols])))
        out[f"HL-min-{name}-Hit1"] = _pct(np.mean(top_positive[:, cols].any(axis=1).astype(np.float64)))
    return out


# ---------------------------------------------------------------- public API


def evaluate_qvhighlights(predictions, ground_truth, *, missing: str = "error") -> dict[str, float]:
    """The official QVHighlights scorer's brief dict (percentages, two decimals).

    predictions / ground_truth: lists of records or JSONL paths (layouts in the module docstring).
    Moment-retrieval keys come when the predictions carry `pred_relevant_windows`, highlight
    keys when every prediction carries `pred_saliency_scores`. missing: "error" | "miss" | "skip".
    """
    preds, gts = _align(predictions, ground_truth, missing)
    qids = [g["qid"] for g in gts]
    given = [p for p in preds if p is not _NO_PREDICTION]
    has_saliency = ["pred_saliency_scores" in p for p in given]
    out = {}
    if any(("pred_relevant_windows" in p) or ("refused" in p) for p in given):
        out.update(_moment_retrieval(preds, gts, qids))
    if all(has_saliency):
        out.update(_highlights(preds, gts, qids))
    elif any(has_saliency):
        qid = given[has_saliency.index(False)]["qid"]
        raise ValueError(f"prediction qid {qid!r} has no pred_saliency_scores while others have them")
    if not out:
        raise ValueError("predictions carry neither pred_relevant_windows nor pred_saliency_scores")
    return out


def evaluate_charades(predictions, ground_truth, *, missing: str = "error") -> dict[str, float]:
    """R1@0.3/0.5/0.7 of the first listed window and its mean IoU, in percent (two decimals).

    The IoU is the true IoU with the best-overlapping ground-truth window (Charades-STA has one);
    an empty window list or a refusal counts as IoU 0.
    """
    preds, gts = _align(predictions, ground_truth, missing)
    qids = [g["qid"] for g in gts]
    pred, n_pred = _pack_windows(preds, "pred_relevant_windows", qids, 1, "predictions")
    gt, n_gt = _pack_windows(gts, "relevant_windows", qids, None, "ground truth")
    if (n_gt == 0).any():
        qid = qids[int(np.argmin(n_gt))]
        raise ValueError(f"ground truth qid {qid!r} has no relevant window: score irrelevant "
                         "queries with refusal_metrics")
    gt_valid = np.arange(gt.shape[1]) < n_gt[:, None]
    iou = np.where(gt_valid, _cross_iou(pred[:, :1, :2], gt[..., :2])[:, 0, :], 0.0).max(axis=1)
    iou = np.where(n_pred > 0, iou, 0.0)
    out = {f"R1@{t}": _pct(np.mean(iou >= t)) for t in CHARADES_THRESHOLDS}
    out["mIoU"] = _pct(np.mean(iou))
    return out


def is_relevant(record: Mapping) -> bool:
    """A ground-truth query is relevant unless its `relevance` (PIR: "irrelevant", "partial") is not
    "relevant", it says `"relevant": false`, or it has no window."""
    if "relevance" in record:
        return record["relevance"] == "relevant"
    if "relevant" in record:
        return bool(record["relevant"])
    return len(record.get("relevant_windows") or []) > 0


def refusal_metrics(predictions, ground_truth, *, missing: str = "error") -> dict[str, float]:
    """PIR refusal scores in percent: `refusal_acc` (irrelevant queries refused) and
    `false_refusal_rate` (relevant queries refused), with the query counts, plus
    `refusal_acc_<kind>` for each PIR `relevance` kind present ("irrelevant", "partial").
    A rate over no query is NaN. Refusal and relevance are defined by `is_refusal` and `is_relevant`."""
    preds, gts = _align(predictions, ground_truth, missing)
    refused = np.array([is_refusal(p) for p in preds], dtype=bool)
    relevant = np.array([is_relevant(g) for g in gts], dtype=bool)

    def rate(mask):
        return _pct(np.mean(refused[mask])) if mask.any() else math.nan

    out = {"refusal_acc": rate(~relevant), "false_refusal_rate": rate(relevant),
           "num_irrelevant": int((~relevant).sum()), "num_relevant": int(relevant.sum())}
    kinds = np.array([str(g.get("relevance", "")) for g in gts])
    for kind in sorted(set(kinds[~relevant]) - {""}):
        out[f"refusal_acc_{kind}"] = rate(kinds == kind)
    return out
