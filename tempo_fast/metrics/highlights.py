"""Highlight detection: the official QVHighlights HL numbers (Hit1 and mAP at the Fair / Good /
VeryGood saliency levels) from predicted clip scores. Rules: `tempo_fast.metrics`."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .ranking import descending_order, sum_selected
from .records import pct

CLIP_SECONDS = 2
HL_LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}
NUM_ANNOTATORS = 3


def gt_saliency(gts: list[Mapping], qids: list) -> tuple[np.ndarray, np.ndarray]:
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


def ranked_ap(scores: np.ndarray, valid: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Interpolated AP (official `get_ap`) of clip scores `[Q, C]` for labels `[Q, C, K]` → `[Q, K]`."""
    order = descending_order(scores, valid)
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

    sums, counts = sum_selected(rows(interp), rows(level), reverse=True)
    ap = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).reshape(num_q, k)
    n_pos, n_valid = positive.sum(axis=1), valid.sum(axis=1)[:, None]
    return np.where(n_pos == 0, 0.0, np.where(n_pos == n_valid, 1.0, ap))


def highlights(preds: list[Mapping], gts: list[Mapping], qids: list) -> dict:
    gt_scores, n_clips = gt_saliency(gts, qids)
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
    ap = ranked_ap(scores, clip_valid, positive & clip_valid[..., None])  # one sort for all levels
    out = {}
    for i, name in enumerate(HL_LEVELS):
        cols = slice(i * NUM_ANNOTATORS, (i + 1) * NUM_ANNOTATORS)
        out[f"HL-min-{name}-mAP"] = pct(np.mean(np.ascontiguousarray(ap[:, cols])))
        out[f"HL-min-{name}-Hit1"] = pct(np.mean(top_positive[:, cols].any(axis=1).astype(np.float64)))
    return out
