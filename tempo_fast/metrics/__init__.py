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
- R1@t: the first listed window against the ground-truth window of highest IoU (first on ties,
  a NaN IoU counting as the highest); the IoU is then taken with the windows' hull as union and
  0 where the hull is 0, as the official code does.
- mAP: the first 10 listed windows, stably sorted by decreasing score; at each IoU threshold
  0.50..0.95 a prediction is matched to the unmatched ground-truth window of highest IoU (true
  positive unless IoU < threshold); all-point (VOC) interpolated AP per query, averaged over
  queries, then over thresholds. short/middle/long keep the ground-truth windows of length
  (0, 10], (10, 30], (30, 150] and the queries that still have one.
- The IoU of the matcher is intersection / (length + length - intersection) with the official
  arithmetic, so where that union is 0 it is NaN, which the official matcher visits first and
  counts as a hit at every threshold: two zero-length windows, and a reversed window
  (end < start) exactly as long as a ground-truth window. Any other reversed window has
  intersection 0 and misses. These are reproduced, so a file of malformed windows gets the
  official numbers.
- Highlights: `int(duration / 2)` clips, clips outside `relevant_clip_ids` score 0; positive for
  an annotator when its score is >= 2/3/4 (Fair/Good/VeryGood); predicted scores are cut or
  zero-padded to the clip count. Hit1: the top-scored clip (first on ties) is positive for any
  annotator. mAP: per query and annotator, the mean of the interpolated precision at each
  distinct recall level (tied scores form one level); all-negative gives 0, all-positive 1.
Sums run in the official order and IoU ties are visited in the order numpy's argsort gives the
official code (the same call is made here), so per-query numbers match the official ones bit for
bit (checked on random inputs with many ties, and on perturbed versions of the public
prediction file against the official scorer's output).

Malformed predicted windows (end before start, e.g. `[0.0, -2.0]` from clamping a shifted
window, or a NaN/infinite bound): scored with the official arithmetic above and reported in one
`MalformedWindowWarning` per call with their count; `strict=True` raises a ValueError naming the
first one instead. Ground-truth windows must be finite with start <= end (ValueError otherwise);
a bound that is not a number raises in both.

Where the official scorer crashes or is undefined, the rule here:
- predictions missing for some ground-truth qids: `missing="error"` (default) raises naming
  them, `"miss"` scores them as empty predictions, `"skip"` drops those queries (the official
  `match_number=False`); predictions for unknown qids raise under "error" and are dropped else;
- an empty window list (or a refusal): AP 0 and R1 IoU 0 (the official scorer crashes in R1);
  an empty saliency list: all clips score 0 and Hit1 misses;
- NaN scores (windows or clips) rank below every other score (the official sort leaves them
  wherever its comparisons happen to); a window without a score ranks after the scored ones in
  listed order (the official scorer crashes on it).

Charades-STA (`evaluate_charades`): the first listed window's IoU with the best-overlapping
ground-truth window, intersection over union; a malformed window has IoU 0.
"""
from .records import MalformedWindowWarning, is_refusal, is_relevant, read_jsonl
from .scores import (CHARADES_THRESHOLDS, CLIP_SECONDS, HL_LEVELS, MAX_PRED_WINDOWS, MISSING_RULES, MR_IOU_THRESHOLDS,
                     MR_LENGTH_RANGES, NUM_ANNOTATORS, evaluate_charades, evaluate_qvhighlights, refusal_metrics)

__all__ = ["CHARADES_THRESHOLDS", "CLIP_SECONDS", "HL_LEVELS", "MAX_PRED_WINDOWS", "MISSING_RULES",
           "MR_IOU_THRESHOLDS", "MR_LENGTH_RANGES", "MalformedWindowWarning", "NUM_ANNOTATORS",
           "evaluate_charades", "evaluate_qvhighlights", "is_refusal", "is_relevant", "read_jsonl",
           "refusal_metrics"]
