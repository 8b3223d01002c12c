"""Prediction and ground-truth records for the metrics: JSONL reading, pairing by qid, windows
packed into padded arrays, and the check of predicted windows (malformed ones warned about once
per call, or raised under `strict`). Layouts and rules: `tempo_fast.metrics`."""
from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

MISSING_RULES = ("error", "miss", "skip")
# stands in for the prediction of a query scored under missing="miss"
NO_PREDICTION = MappingProxyType({"pred_relevant_windows": [], "pred_saliency_scores": []})


class MalformedWindowWarning(UserWarning):
    """Predicted windows with end < start or a non-finite bound were scored (the official way)."""


def pct(value: float) -> float:
    """A fraction as a percentage with two decimals, formatted the way the official scorer does."""
    return float(f"{100 * value:.2f}")


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


def is_relevant(record: Mapping) -> bool:
    """A ground-truth query is relevant unless its `relevance` (PIR: "irrelevant", "partial") is not
    "relevant", it says `"relevant": false`, or it has no window."""
    if "relevance" in record:
        return record["relevance"] == "relevant"
    if "relevant" in record:
        return bool(record["relevant"])
    return len(record.get("relevant_windows") or []) > 0


def align(predictions, ground_truth, missing: str) -> tuple[list[Mapping], list[Mapping]]:
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
    return [preds.get(q, NO_PREDICTION) for q in qids], [gts[q] for q in qids]


def _is_number(x) -> bool:
    kind = type(x)
    return kind is float or kind is int or (isinstance(x, numbers.Real) and kind is not bool)


def _bad_window(w) -> bool:
    return not isinstance(w, (list, tuple)) or len(w) not in (2, 3) or not all(map(_is_number, w))


def pack_windows(records: list[Mapping], key: str, qids: list, limit: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Windows `[[s, e(, score)], ...]` of each record (the first `limit`) as a NaN-padded
    `[Q, N, 3]` float64 array and counts `[Q]`; a missing score is NaN. Bounds must be numbers."""
    flat, counts, lists = [], [], []
    for record, qid in zip(records, qids):
        windows = [] if record.get("refused") else record.get(key)
        if windows is None:
            raise ValueError(f"{what} qid {qid!r} has no {key!r}")
        windows = list(windows)[:limit]
        lists.append(windows)
        for w in windows:
            if not isinstance(w, (list, tuple)):
                flat.append(None)
            elif len(w) == 3:
                flat.append(w)
            elif len(w) == 2:
                flat.append((w[0], w[1], math.nan))
            else:
                flat.append(None)  # found below
        counts.append(len(windows))
    # one pass over the element types in C; the per-window search only when one is not a number
    if not {type(x) for w in flat if w is not None for x in w} <= {float, int} or None in flat:
        for windows, qid in zip(lists, qids):
            for w in windows:
                if _bad_window(w):
                    raise ValueError(f"{what} qid {qid!r}: a window must be [start, end] or [start, end, score] "
                                     f"numbers, got {w!r}")
    counts = np.asarray(counts, dtype=np.int64)
    width = max(int(counts.max(initial=0)), 1)
    out = np.full((len(records), width, 3), np.nan)
    rows = np.repeat(np.arange(len(records)), counts)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, cols] = np.asarray(flat, dtype=np.float64).reshape(-1, 3)
    return out, counts


def malformed(windows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`[Q, N]` mask of the valid windows that have end < start or a non-finite bound."""
    valid = np.arange(windows.shape[1]) < counts[:, None]
    start, end = windows[..., 0], windows[..., 1]
    with np.errstate(invalid="ignore"):
        return valid & ~(np.isfinite(start) & np.isfinite(end) & (end >= start))


def check_windows(windows: np.ndarray, counts: np.ndarray, qids: list, what: str, *, strict: bool) -> None:
    """Raise on malformed windows (`strict`), else warn once with their count."""
    bad = malformed(windows, counts)
    if not bad.any():
        return
    q, n = np.argwhere(bad)[0]
    first = f"qid {qids[q]!r}: window {windows[q, n, :2].tolist()}"
    if strict:
        raise ValueError(f"{what} {first} must have finite start <= end")
    warnings.warn(MalformedWindowWarning(
        f"{int(bad.sum())} {what} windows in {int(bad.any(axis=1).sum())} queries have end < start or a non-finite "
        f"bound (first: {first}); scored as the official scorer scores them (see tempo_fast.metrics); "
        "pass strict=True to raise instead"), stacklevel=3)
