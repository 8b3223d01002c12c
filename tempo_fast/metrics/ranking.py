"""Numerics shared by the moment and highlight metrics: stable descending orders with NaN last,
and per-row sums added in the order the official scorer's `np.sum` adds them."""
from __future__ import annotations

import numpy as np


def sum_selected(values: np.ndarray, selected: np.ndarray, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
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


def descending_order(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Stable order by decreasing score along the last axis: NaN after every number, padding last."""
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.lexsort((key, ~valid), axis=-1)
