"""Scoring what models write: perturbed versions of the public QVHighlights prediction file
(shifted and clamped, reversed, zero-length, duplicated windows, negative times, windows past the
video end) scored by `evaluate_qvhighlights` against the official scorer's numbers, the warning
and `strict=True`, the official NaN-IoU rule by hand, and `evaluate_charades` on the same kinds
of windows against a plain-Python reference.

How OFFICIAL was produced (nothing of the official code is in this repository): the official
scorer (jayleicn/moment_detr, standalone_eval/eval.py at b7e553a, `eval_submission(preds, gts,
verbose=False)["brief"]`) was run outside the repository, in a separate venv with numpy 2.4.6 and
scikit-learn 1.9.1, on the files `perturbed(name, ...)` below writes from sample_val_preds.jsonl
and highlight_val_release.jsonl; the printed brief dicts are pasted here.
"""
import json
import math
import os
import warnings

import numpy as np
import pytest

from tempo_fast.metrics import MalformedWindowWarning, evaluate_charades, evaluate_qvhighlights

HL_KEYS = {"HL-min-Fair-mAP": 67.77, "HL-min-Fair-Hit1": 66.45, "HL-min-Good-mAP": 58.09,
           "HL-min-Good-Hit1": 64.45, "HL-min-VeryGood-mAP": 35.65, "HL-min-VeryGood-Hit1": 55.55}
# The official scorer's MR numbers on each perturbed file ("MR-" left off); its HL numbers are
# HL_KEYS on every one (the saliency scores are not perturbed).
OFFICIAL_MR = {
    "shift_clamp": {"full-R1@0.5": 22.19, "full-R1@0.7": 10.84, "full-mAP": 12.66, "full-mAP@0.5": 25.41,
                    "full-mAP@0.75": 11.2, "long-mAP": 20.31, "middle-mAP": 10.52, "short-mAP": 3.28},
    "reversed": {"full-R1@0.5": 27.23, "full-R1@0.7": 18.06, "full-mAP": 24.78, "full-mAP@0.5": 36.64,
                 "full-mAP@0.75": 24.46, "long-mAP": 29.35, "middle-mAP": 23.6, "short-mAP": 10.43},
    "zero_length": {"full-R1@0.5": 0.0, "full-R1@0.7": 0.0, "full-mAP": 5.11, "full-mAP@0.5": 11.64,
                    "full-mAP@0.75": 4.15, "long-mAP": 6.18, "middle-mAP": 5.36, "short-mAP": 1.85},
    "negative": {"full-R1@0.5": 20.65, "full-R1@0.7": 6.97, "full-mAP": 8.32, "full-mAP@0.5": 22.24,
                 "full-mAP@0.75": 5.38, "long-mAP": 17.85, "middle-mAP": 4.38, "short-mAP": 0.95},
    "past_end": {"full-R1@0.5": 9.16, "full-R1@0.7": 3.35, "full-mAP": 4.97, "full-mAP@0.5": 12.77,
                 "full-mAP@0.75": 2.78, "long-mAP": 14.84, "middle-mAP": 0.0, "short-mAP": 0.0},
    "duplicated": {"full-R1@0.5": 53.94, "full-R1@0.7": 34.84, "full-mAP": 29.97, "full-mAP@0.5": 50.32,
                   "full-mAP@0.75": 29.08, "long-mAP": 38.81, "middle-mAP": 29.89, "short-mAP": 2.24},
    "mixed": {"full-R1@0.5": 12.77, "full-R1@0.7": 6.32, "full-mAP": 9.99, "full-mAP@0.5": 19.49,
              "full-mAP@0.75": 8.45, "long-mAP": 14.98, "middle-mAP": 8.08, "short-mAP": 3.73},
}


def _shift_clamp(i, k, s, e, duration):
    """Shift by -30..30 s with the record, then clamp each bound on its own: [0, -2]-like windows."""
    d = ((i % 5) - 2) * 15.0
    return [max(s + d, 0.0), min(e + d, duration)]


def _reverse(i, k, s, e, duration):
    return [e, s] if (i + k) % 2 else [s, e]


def _zero_length(i, k, s, e, duration):
    return [s, s] if k % 3 == 0 else [s, e]


def _negative(i, k, s, e, duration):
    return [s - 200.0, e] if i % 3 == 0 else [s - 10.0, e - 10.0]


def _past_end(i, k, s, e, duration):
    return [s + duration, e + duration] if k % 4 == 3 else [s, e + 60.0]


WINDOW_PERTURBATIONS = {"shift_clamp": _shift_clamp, "reversed": _reverse, "zero_length": _zero_length,
                        "negative": _negative, "past_end": _past_end}


def perturbed(name: str, preds: list, durations: dict) -> list:
    """A perturbed copy of the prediction records (scores and saliency untouched)."""
    out = [{**p, "pred_relevant_windows": [list(w) for w in p["pred_relevant_windows"]]} for p in preds]
    if name == "duplicated":  # the first window three times, then the rest (the scorer reads 10)
        for p in out:
            w = p["pred_relevant_windows"]
            p["pred_relevant_windows"] = w[:1] * 3 + w[1:]
        return out
    kinds = list(WINDOW_PERTURBATIONS) if name == "mixed" else [name]
    for i, p in enumerate(out):
        fn = WINDOW_PERTURBATIONS[kinds[i % len(kinds)]]
        p["pred_relevant_windows"] = [fn(i, k, s, e, float(durations[p["qid"]])) + [score]
                                      for k, (s, e, score) in enumerate(p["pred_relevant_windows"])]
    if name == "mixed":  # and a reversed first window (the one R1 reads) in every 7th record
        for p in out[::7]:
            s, e, score = p["pred_relevant_windows"][0]
            p["pred_relevant_windows"][0] = [e, s, score]
    return out


@pytest.fixture(scope="module")
def sample(shared_data):
    from tempo_fast.metrics import read_jsonl

    root = os.path.join(shared_data, "qvhighlights")
    preds = read_jsonl(os.path.join(root, "sample_val_preds.jsonl"))
    gts = read_jsonl(os.path.join(root, "highlight_val_release.jsonl"))
    return preds, gts, {g["qid"]: g["duration"] for g in gts}


def _reversed_count(preds, limit=10):
    """(windows, queries) with end < start among the windows a scorer reads."""
    per_query = [sum(w[1] < w[0] for w in p["pred_relevant_windows"][:limit]) for p in preds]
    return sum(per_query), sum(n > 0 for n in per_query)


@pytest.mark.parametrize("name", list(OFFICIAL_MR))
def test_perturbed_file_gets_the_official_numbers(sample, name):
    preds, gts, durations = sample
    bad = perturbed(name, preds, durations)
    expected = {f"MR-{k}": v for k, v in OFFICIAL_MR[name].items()} | HL_KEYS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = evaluate_qvhighlights(bad, gts)
    assert out == expected and list(out) == list(expected)
    n_windows, n_queries = _reversed_count(bad)
    malformed = [w for w in caught if issubclass(w.category, MalformedWindowWarning)]
    if n_windows:
        assert len(malformed) == 1  # once per call, with the count
        assert f"{n_windows} predicted windows in {n_queries} queries" in str(malformed[0].message)
        with pytest.raises(ValueError, match="end"):
            evaluate_qvhighlights(bad, gts, strict=True)
    else:
        assert not malformed
        assert evaluate_qvhighlights(bad, gts, strict=True) == expected


def test_perturbations_make_what_they_say(sample):
    preds, gts, durations = sample
    windows = {name: [w for p in perturbed(name, preds, durations) for w in p["pred_relevant_windows"]]
               for name in OFFICIAL_MR}
    assert [0.0, -2.0] in [w[:2] for w in windows["shift_clamp"]]  # clamping a shifted window
    assert sum(w[1] < w[0] for w in windows["reversed"]) > 5000
    assert sum(w[1] == w[0] for w in windows["zero_length"]) > 5000
    assert min(w[0] for w in windows["negative"]) < -150
    assert max(w[1] for w in windows["past_end"]) > 250


def mr(windows, gt_windows, **kw):
    return evaluate_qvhighlights([{"qid": 1, "pred_relevant_windows": windows}],
                                 [{"qid": 1, "relevant_windows": gt_windows}], **kw)


def test_official_nan_iou_rule_by_hand():
    """The official IoU is inter / (len_p + len_g - inter): a reversed window as long as the
    ground-truth window gives 0/0 = NaN, which its matcher does not reject (`iou < t` is False)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedWindowWarning)
        same_length = mr([[10.0, 0.0, 1.0]], [[0.0, 10.0]])
        assert same_length["MR-full-mAP"] == 100.0 and same_length["MR-full-R1@0.5"] == 0.0  # R1: hull IoU 0
        assert mr([[12.0, 0.0, 1.0]], [[0.0, 10.0]])["MR-full-mAP"] == 0.0   # union -2: IoU -0.0, a miss
        assert mr([[4.0, 2.0, 1.0]], [[0.0, 10.0]])["MR-full-mAP"] == 0.0    # union 8: IoU 0, a miss
        # the second NaN window finds the ground truth locked: a false positive after a hit, AP 1
        assert mr([[10.0, 0.0, 0.9], [20.0, 10.0, 0.8]], [[0.0, 10.0]])["MR-full-mAP"] == 100.0
        # a NaN bound makes every IoU NaN: a hit for mAP, a miss for R1
        nan_start = mr([[math.nan, 10.0, 1.0]], [[0.0, 10.0]])
        assert nan_start["MR-full-mAP"] == 100.0 and nan_start["MR-full-R1@0.5"] == 0.0
    assert mr([[5.0, 5.0, 1.0]], [[5.0, 5.0]])["MR-full-mAP"] == 100.0     # two zero-length windows
    assert mr([[5.0, 5.0, 1.0]], [[0.0, 10.0]])["MR-full-mAP"] == 0.0


def test_warning_once_per_call_and_strict():
    with pytest.warns(MalformedWindowWarning, match=r"2 predicted windows in 1 queries.*\[0.0, -2.0\]"):
        mr([[0.0, -2.0, 0.9], [5.0, 1.0, 0.5], [0.0, 10.0, 0.1]], [[0.0, 10.0]])
    with pytest.raises(ValueError, match=r"qid 1: window \[0.0, -2.0\] must have finite start <= end"):
        mr([[0.0, -2.0, 0.9]], [[0.0, 10.0]], strict=True)
    with pytest.raises(ValueError, match="qid 1: window .*inf"):
        mr([[0.0, math.inf, 0.9]], [[0.0, 10.0]], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # windows past the 10 the scorer reads are not looked at
        mr([[0.0, 10.0, 1.0]] * 10 + [[5.0, 1.0, 0.5]], [[0.0, 10.0]])


# ---------------------------------------------------------------- Charades-STA


def ref_charades_iou(window, gt_windows):
    """Plain-Python IoU of a first window: 0 for a malformed one, else the best true IoU."""
    s, e = window
    if not (math.isfinite(s) and math.isfinite(e)) or e < s:
        return 0.0
    best = 0.0
    for gs, ge in gt_windows:
        inter = max(0.0, min(e, ge) - max(s, gs))
        union = (e - s) + (ge - gs) - inter
        best = max(best, inter / union if union > 0 else 0.0)
    return best


@pytest.mark.parametrize("name", list(WINDOW_PERTURBATIONS) + ["non_finite"])
def test_charades_malformed_first_windows(shared_data, name):
    with open(os.path.join(shared_data, "charades_sta", "charades_sta_test.json")) as f:
        raw = json.load(f)
    gts, preds = [], []
    for i, (vid, item) in enumerate(sorted(raw.items())[:400]):
        s, e = item["timestamps"][0]
        guess = [s + (i % 7) - 3.0, e + (i % 5) - 2.0]  # near misses, some already reversed
        if name == "non_finite":
            window = [math.nan, guess[1]] if i % 3 == 0 else ([guess[0], math.inf] if i % 3 == 1 else guess)
        else:
            window = WINDOW_PERTURBATIONS[name](i, i % 2, guess[0], guess[1], float(item["duration"]))
        gts.append({"qid": vid, "relevant_windows": [[s, e]]})
        preds.append({"qid": vid, "pred_relevant_windows": [window + [1.0], [s, e, 0.5]]})  # 2nd never read
    ious = [ref_charades_iou(p["pred_relevant_windows"][0][:2], g["relevant_windows"]) for p, g in zip(preds, gts)]
    expected = {f"R1@{t}": round(100 * np.mean([x >= t for x in ious]), 2) for t in (0.3, 0.5, 0.7)}
    expected["mIoU"] = round(100 * np.mean(ious), 2)
    n_bad = sum(not (math.isfinite(s) and math.isfinite(e) and s <= e)
                for s, e, _ in (p["pred_relevant_windows"][0] for p in preds))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = evaluate_charades(preds, gts)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=0.0051), key
    malformed = [w for w in caught if issubclass(w.category, MalformedWindowWarning)]
    assert len(malformed) == (1 if n_bad else 0)
    if n_bad:
        assert f"{n_bad} predicted windows in {n_bad} queries" in str(malformed[0].message)
        with pytest.raises(ValueError, match="finite start <= end"):
            evaluate_charades(preds, gts, strict=True)
