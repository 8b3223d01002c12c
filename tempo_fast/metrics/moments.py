"""Moment retrieval: the official QVHighlights MR numbers (R1@0.5/0.7, mAP over IoU 0.50..0.95,
per length bucket) from packed window arrays, with the official IoU arithmetic (NaN where the
union is 0, which the matcher counts as a hit). Rules: `tempo_fast.metrics`."""
from __future__ import annotations

import numpy as np

from .ranking import descending_order, sum_selected
from .records import pct

MR_IOU_THRESHOLDS = tuple(float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10))
MR_LENGTH_RANGES = {"short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0)}


def official_cross_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of windows `a[..., N, 2]` with `b[..., M, 2]` → `[..., N, M]` as the official code
    computes it: intersection / (len_a + len_b - intersection), NaN where that is 0 / 0, -0.0
    where a reversed window makes it negative."""
    left = np.maximum(a[..., :, None, 0], b[..., None, :, 0])
    right = np.minimum(a[..., :, None, 1], b[..., None, :, 1])
    inter = np.clip(right - left, 0, None)
    union = (a[..., :, None, 1] - a[..., :, None, 0]) + (b[..., None, :, 1] - b[..., None, :, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def _visit_order(iou: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """Rank `[Q, P, G]` of each ground-truth window in the order the official matcher visits them,
    `iou.argsort()[::-1]` over the query's own windows (NaN first). numpy's argsort is not stable
    for most lengths, so tied IoUs are ranked by that very call, made on rows of the same length."""
    rank = np.full(iou.shape, iou.shape[2], dtype=np.int64)
    for g in np.unique(n_gt):
        rows = n_gt == g
        order = np.argsort(iou[rows][..., :g], axis=-1)[..., ::-1]
        sub = np.empty(order.shape, dtype=np.int64)
        np.put_along_axis(sub, order, np.broadcast_to(np.arange(g), order.shape), axis=-1)
        rank[rows, :, :g] = sub
    return rank


def detection_ap(pred: np.ndarray, n_pred: np.ndarray, gt: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """All-point interpolated AP `[Q, T]` of scored windows `pred[Q, P, 3]` (first `n_pred` valid)
    against `gt[Q, G, 2]` (first `n_gt` valid, at least one)."""
    num_q, width = pred.shape[:2]
    thresholds = np.asarray(MR_IOU_THRESHOLDS)
    pred_valid = np.arange(width) < n_pred[:, None]
    order = descending_order(pred[..., 2], pred_valid)
    pred = np.take_along_axis(pred, order[..., None], axis=1)
    iou = official_cross_iou(pred[..., :2], gt)                          # [Q, P, G]
    rank = _visit_order(iou, n_gt)                                       # padding ranks last
    never = gt.shape[1]
    locked = np.zeros((num_q, len(thresholds), gt.shape[1]), dtype=bool)
    tp = np.zeros((num_q, len(thresholds), width), dtype=bool)
    rows = np.arange(num_q)[:, None]
    cols = np.arange(len(thresholds))[None, :]
    for p in range(width):
        # the first unmatched window in visiting order is the unmatched one of highest IoU (or NaN);
        # the official test is `iou < threshold` -> miss, so a NaN IoU is a hit
        candidates = np.where(locked, never, rank[:, None, p, :])       # [Q, T, G]
        best = candidates.argmin(axis=2)
        hit = (candidates[rows, cols, best] < never) & ~(iou[rows, p, best] < thresholds) & pred_valid[:, p, None]
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
    sums, _ = sum_selected(terms.reshape(-1, width + 1), changed.reshape(-1, width + 1))
    return np.where(n_pred[:, None] > 0, sums.reshape(num_q, len(thresholds)), 0.0)


def r1_iou(first: np.ndarray, has_pred: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray) -> np.ndarray:
    """IoU `[Q]` of each first window with its best-overlapping ground-truth window (official
    cross IoU, first maximum, NaN winning), hull as union, 0 where the hull is 0."""
    iou = np.where(gt_valid, official_cross_iou(first[:, None, :], gt)[:, 0, :], -np.inf)
    target = gt[np.arange(len(gt)), iou.argmax(axis=1)]
    with np.errstate(invalid="ignore"):
        inter = np.maximum(0, np.minimum(first[:, 1], target[:, 1]) - np.maximum(first[:, 0], target[:, 0]))
        hull = np.maximum(first[:, 1], target[:, 1]) - np.minimum(first[:, 0], target[:, 0])
        paired = np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)
    return np.where(has_pred, paired, 0.0)


def moment_retrieval(pred: np.ndarray, n_pred: np.ndarray, gt: np.ndarray, n_gt: np.ndarray) -> dict:
    """The MR keys of the official brief dict: `pred[Q, P, 3]` in listed order (at most 10),
    `gt[Q, G, 2]`, every query with at least one ground-truth window."""
    gt_valid = np.arange(gt.shape[1]) < n_gt[:, None]
    with np.errstate(invalid="ignore"):
        r1 = r1_iou(pred[:, 0, :2], n_pred > 0, gt, gt_valid)
        full_ap = detection_ap(pred, n_pred, gt, n_gt).mean(0)
    out = {"MR-full-mAP": pct(np.mean(full_ap)),
           "MR-full-mAP@0.5": pct(full_ap[0]), "MR-full-mAP@0.75": pct(full_ap[5])}
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
        with np.errstate(invalid="ignore"):
            ap = detection_ap(pred[keep], n_pred[keep], gt_range, in_range[keep].sum(axis=1)).mean(0)
        out[f"MR-{name}-mAP"] = pct(np.mean(ap))
    out["MR-full-R1@0.5"] = pct(np.mean(r1 >= 0.5))
    out["MR-full-R1@0.7"] = pct(np.mean(r1 >= 0.7))
    return dict(sorted(out.items()))
