"""Tests for tempo_fast.metrics and `tempo-fast eval`: the official numbers on the real
QVHighlights files, hand-computed cases for every rule of the official scorer, and a plain-Python
per-query reference on random inputs."""
import json
import math
import os

import numpy as np
import pytest

from tempo_fast import metrics
from tempo_fast.cli import main as cli_main
from tempo_fast.metrics import evaluate_charades, evaluate_qvhighlights, refusal_metrics

# What the official scorer prints on sample_val_preds.jsonl (shared data README); the Fair and
# Good highlight numbers come from running the official standalone scorer on the same files.
OFFICIAL_SAMPLE_VAL = {
    "MR-full-R1@0.5": 53.94, "MR-full-R1@0.7": 34.84, "MR-full-mAP": 32.2, "MR-full-mAP@0.5": 54.96,
    "MR-full-mAP@0.75": 31.01, "MR-long-mAP": 41.11, "MR-middle-mAP": 32.3, "MR-short-mAP": 3.28,
    "HL-min-Fair-mAP": 67.77, "HL-min-Fair-Hit1": 66.45, "HL-min-Good-mAP": 58.09,
    "HL-min-Good-Hit1": 64.45, "HL-min-VeryGood-mAP": 35.65, "HL-min-VeryGood-Hit1": 55.55,
}


def gt(qid, windows, duration=150, clips=(), scores=()):
    return {"qid": qid, "vid": f"v{qid}", "duration": duration, "relevant_windows": windows,
            "relevant_clip_ids": list(clips), "saliency_scores": [list(s) for s in scores]}


def pred(qid, windows, saliency=None):
    record = {"qid": qid, "vid": f"v{qid}", "pred_relevant_windows": windows}
    if saliency is not None:
        record["pred_saliency_scores"] = saliency
    return record


def mr(preds, gts, **kw):
    return evaluate_qvhighlights(preds, gts, **kw)


# ---------------------------------------------------------------- independent references


def ref_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def ref_detection_ap(gt_windows, pred_windows, threshold):
    """AP of one query: listed order cut to 10, stable sort by score, greedy matching, VOC AP."""
    ranked = sorted(pred_windows[:10], key=lambda w: -w[2])
    used, hits = set(), []
    for w in ranked:
        free = [(ref_iou(w, g), j) for j, g in enumerate(gt_windows) if j not in used]
        best = max(free, default=(-1.0, None))
        hits.append(best[0] >= threshold)
        if hits[-1]:
            used.add(best[1])
    if not ranked:
        return 0.0
    ap, tp = 0.0, 0
    precisions, recalls = [], []
    for k, hit in enumerate(hits, 1):
        tp += hit
        precisions.append(tp / k)
        recalls.append(tp / len(gt_windows))
    prev_recall = 0.0
    for k in range(len(hits)):
        if recalls[k] > prev_recall:
            ap += (recalls[k] - prev_recall) * max(precisions[k:])
            prev_recall = recalls[k]
    return ap


def ref_ranked_ap(labels, scores):
    """Highlight AP of one annotator: mean interpolated precision over distinct recall levels."""
    if all(y == labels[0] for y in labels):
        return float(labels[0])
    levels = sorted(set(scores), reverse=True)
    points = []  # (precision, tp) after each block of tied scores
    for s in levels:
        chosen = [y for y, x in zip(labels, scores) if x >= s]
        points.append((sum(chosen) / len(chosen), sum(chosen)))
    values, prev_tp = [], 0
    for i, (_, tp) in enumerate(points):
        if tp > prev_tp:
            values.append(max(p for p, _ in points[i:]))
            prev_tp = tp
    return sum(values) / len(values)


# ---------------------------------------------------------------- real files


def test_official_numbers_on_sample_val(shared_data):
    root = os.path.join(shared_data, "qvhighlights")
    out = evaluate_qvhighlights(os.path.join(root, "sample_val_preds.jsonl"),
                                os.path.join(root, "highlight_val_release.jsonl"))
    assert out == OFFICIAL_SAMPLE_VAL
    assert list(out) == list(OFFICIAL_SAMPLE_VAL)  # the official brief's key order


def test_charades_real_file(shared_data):
    with open(os.path.join(shared_data, "charades_sta", "charades_sta_test.json")) as f:
        raw = json.load(f)
    gts, preds, ious = [], [], []
    for vid, item in sorted(raw.items())[:300]:
        for i, (s, e) in enumerate(item["timestamps"]):
            window = [s + 1.5, e + 0.5]
            if window[0] > window[1]:
                continue
            gts.append({"qid": f"{vid}#{i}", "relevant_windows": [[s, e]]})
            preds.append({"qid": f"{vid}#{i}", "pred_relevant_windows": [window + [1.0]]})
            ious.append(ref_iou(window, [s, e]))
    out = evaluate_charades(preds, gts)
    for t in (0.3, 0.5, 0.7):
        assert out[f"R1@{t}"] == pytest.approx(100 * np.mean([x >= t for x in ious]), abs=0.006)
    assert out["mIoU"] == pytest.approx(100 * np.mean(ious), abs=0.006)


# ---------------------------------------------------------------- moment retrieval, by hand


def test_ap_all_point_interpolation():
    # precisions 1, 1/2, 2/3 at recalls 1/2, 1/2, 1: AP = 1/2 * 1 + 1/2 * 2/3
    out = mr([pred(1, [[0, 10, 0.9], [50, 60, 0.8], [20, 30, 0.7]])], [gt(1, [[0, 10], [20, 30]])])
    assert out["MR-full-mAP"] == round(100 * (0.5 + 0.5 * 2 / 3), 2) == 83.33


def test_greedy_matching_takes_the_free_window_of_highest_iou():
    # the first prediction takes [0,10] (IoU 1); the second gets [0,12] with IoU 10/12 = 0.833:
    # a hit for thresholds 0.50..0.80, a miss (AP 1/2) for 0.85..0.95
    out = mr([pred(1, [[0, 10, 0.9], [0, 10, 0.8]])], [gt(1, [[0, 10], [0, 12]])])
    assert out["MR-full-mAP@0.5"] == 100.0 and out["MR-full-mAP@0.75"] == 100.0
    assert out["MR-full-mAP"] == (7 * 100 + 3 * 50) / 10


def test_equal_scores_keep_listed_order():
    first = mr([pred(1, [[0, 10, 0.5], [50, 60, 0.5]])], [gt(1, [[0, 10]])])
    second = mr([pred(1, [[50, 60, 0.5], [0, 10, 0.5]])], [gt(1, [[0, 10]])])
    assert first["MR-full-mAP"] == 100.0 and second["MR-full-mAP"] == 50.0


def test_only_first_ten_windows_count():
    windows = [[50, 60, 0.1]] * 10 + [[0, 10, 0.9]]
    assert mr([pred(1, windows)], [gt(1, [[0, 10]])])["MR-full-mAP"] == 0.0
    assert mr([pred(1, windows[-1:] + windows[:9])], [gt(1, [[0, 10]])])["MR-full-mAP"] == 100.0


def test_r1_uses_first_listed_window_and_its_best_ground_truth():
    out = mr([pred(1, [[50, 60, 0.1], [0, 10, 0.9]])], [gt(1, [[0, 10]])])
    assert out["MR-full-R1@0.5"] == 0.0 and out["MR-full-mAP"] == 100.0
    out = mr([pred(1, [[21, 30, 0.5]])], [gt(1, [[0, 10], [20, 30]])])  # IoU 0.9 with the second
    assert out["MR-full-R1@0.7"] == 100.0


def test_length_buckets_keep_windows_and_queries_in_range():
    gts = [gt(1, [[0, 6], [20, 60]]), gt(2, [[0, 20]]), gt(3, [[10, 50]])]
    preds = [pred(1, [[20, 60, 1.0]]), pred(2, [[0, 20, 1.0]]), pred(3, [[100, 140, 1.0]])]
    out = mr(preds, gts)
    assert out["MR-short-mAP"] == 0.0       # query 1 only, its [0,6] window is missed
    assert out["MR-middle-mAP"] == 100.0    # query 2 only
    assert out["MR-long-mAP"] == 50.0       # queries 1 (hit) and 3 (miss)
    assert out["MR-full-mAP"] == round(100 * (0.5 + 1 + 0) / 3, 2)


def test_nan_scores_rank_last_and_empty_lists_miss():
    out = mr([pred(1, [[0, 10, float("nan")], [50, 60, 0.1]])], [gt(1, [[0, 10]])])
    assert out["MR-full-mAP"] == 50.0
    out = mr([pred(1, []), pred(2, [[0, 10, 1.0]])], [gt(1, [[0, 10]]), gt(2, [[0, 10]])])
    assert out["MR-full-mAP"] == 50.0 and out["MR-full-R1@0.5"] == 50.0


def test_windows_without_score_rank_in_listed_order():
    out = mr([pred(1, [[50, 60], [0, 10]])], [gt(1, [[0, 10]])])
    assert out["MR-full-mAP"] == 50.0


def test_missing_predictions_rules():
    gts = [gt(1, [[0, 10]]), gt(2, [[0, 10]])]
    preds = [pred(1, [[0, 10, 1.0]])]
    with pytest.raises(ValueError, match="1 ground-truth qids have no prediction"):
        mr(preds, gts)
    assert mr(preds, gts, missing="miss")["MR-full-mAP"] == 50.0
    assert mr(preds, gts, missing="skip")["MR-full-mAP"] == 100.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        mr(preds + [pred(9, [[0, 1, 1.0]])], gts[:1])


def test_bad_windows_name_the_query():
    with pytest.raises(ValueError, match="qid 7.*finite start <= end"):
        mr([pred(7, [[10, 5, 1.0]])], [gt(7, [[0, 10]])], strict=True)
    with pytest.raises(ValueError, match="ground truth qid 7.*finite start <= end"):
        mr([pred(7, [[0, 5, 1.0]])], [gt(7, [[10, 0]])])
    for bad in ([0, "5", 1.0], [None, 5.0], [0.0, True], 5.0, "abc"):
        with pytest.raises(ValueError, match="qid 7: a window must be"):
            mr([pred(7, [[0.0, 1.0, 0.5], bad])], [gt(7, [[0, 10]])])
    with pytest.raises(ValueError, match="qid 7"):
        mr([pred(7, [[1, 2, 3, 4]])], [gt(7, [[0, 10]])])
    with pytest.raises(ValueError, match="qid 7 has no 'pred_relevant_windows'"):
        mr([{"qid": 7}, pred(8, [])], [gt(7, [[0, 10]]), gt(8, [[0, 10]])])
    with pytest.raises(ValueError, match="twice"):
        mr([pred(7, []), pred(7, [])], [gt(7, [[0, 10]])])


def test_detection_ap_matches_plain_reference():
    rng = np.random.default_rng(3)
    preds, gts, expected = [], [], []
    for q in range(60):
        g = [sorted(rng.uniform(0, 150, 2).tolist()) for _ in range(rng.integers(1, 5))]
        p = [sorted(rng.uniform(0, 150, 2).tolist()) + [float(rng.integers(0, 4))] for _ in range(rng.integers(1, 13))]
        for w in rng.choice(len(g), size=min(len(g), len(p)), replace=False):  # some near-hits
            p[int(rng.integers(len(p)))][:2] = [g[w][0] + rng.normal(0, 2), g[w][1] + rng.normal(0, 2)]
        p = [[min(a, b), max(a, b), s] for a, b, s in p]
        preds.append(pred(q, p))
        gts.append(gt(q, g))
        expected.append([ref_detection_ap(g, p, t) for t in metrics.MR_IOU_THRESHOLDS])
    per_threshold = np.mean(expected, axis=0)
    out = mr(preds, gts)
    assert out["MR-full-mAP"] == pytest.approx(100 * per_threshold.mean(), abs=0.006)
    assert out["MR-full-mAP@0.5"] == pytest.approx(100 * per_threshold[0], abs=0.006)
    assert out["MR-full-mAP@0.75"] == pytest.approx(100 * per_threshold[5], abs=0.006)


# ---------------------------------------------------------------- highlights, by hand


def test_highlight_hit1_and_map():
    # 5 clips; clip 1 scores (4,2,0), clip 2 scores (3,3,1); predicted ranking 1, 2, 3, 0, 4
    g = gt(1, [[2, 6]], duration=10, clips=[1, 2], scores=[[4, 2, 0], [3, 3, 1]])
    out = mr([pred(1, [[2, 6, 1.0]], saliency=[0.1, 0.9, 0.5, 0.2, 0.0])], [g])
    assert out["HL-min-Fair-mAP"] == round(100 * (1 + 1 + 0) / 3, 2)
    assert out["HL-min-Good-mAP"] == 50.0       # annotators: 1, 1/2 (clip 2 ranked second), 0
    assert out["HL-min-VeryGood-mAP"] == round(100 / 3, 2)
    assert out["HL-min-Fair-Hit1"] == out["HL-min-VeryGood-Hit1"] == 100.0


def test_highlight_ties_form_one_recall_level():
    # labels 1,1,0,1,0; scores 0.9 | 0.5 0.5 0.5 | 0: levels at precision 1 and 3/4
    g = gt(1, [[0, 10]], duration=10, clips=[0, 1, 3], scores=[[4, 4, 4], [4, 4, 4], [4, 4, 4]])
    out = mr([pred(1, [[0, 10, 1.0]], saliency=[0.9, 0.5, 0.5, 0.5, 0.0])], [g])
    assert out["HL-min-VeryGood-mAP"] == 87.5 == round(100 * ref_ranked_ap([1, 1, 0, 1, 0], [0.9, .5, .5, .5, 0]), 2)


def test_highlight_scores_cut_or_padded_and_top_outside_video_misses():
    g = gt(1, [[0, 4]], duration=8, clips=[0], scores=[[4, 4, 4]])  # 4 clips, only clip 0 positive
    longer = mr([pred(1, [], saliency=[0.2, 0.1, 0.0, 0.0, 9.0])], [g])
    assert longer["HL-min-VeryGood-Hit1"] == 0.0 and longer["HL-min-VeryGood-mAP"] == 100.0
    shorter = mr([pred(1, [], saliency=[-1.0])], [g])  # padded with zeros: clip 0 ranks last
    assert shorter["HL-min-VeryGood-mAP"] == 25.0
    nan_top = mr([pred(1, [], saliency=[0.5, float("nan"), 0.1, 0.0])], [g])
    assert nan_top["HL-min-VeryGood-Hit1"] == 100.0 and nan_top["HL-min-VeryGood-mAP"] == 100.0


def test_ranked_ap_matches_plain_reference():
    rng = np.random.default_rng(5)
    gts, preds, expected = [], [], []
    for q in range(40):
        n = int(rng.integers(3, 40))
        clips = sorted(rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False).tolist())
        scores = rng.integers(0, 5, size=(len(clips), 3)).tolist()
        saliency = np.round(rng.normal(size=n), 1).tolist()  # many ties
        gts.append(gt(q, [[0, 2]], duration=2 * n, clips=clips, scores=scores))
        preds.append(pred(q, [[0, 2, 1.0]], saliency=saliency))
        full = np.zeros((n, 3))
        full[clips] = scores
        expected.append([ref_ranked_ap((full[:, a] >= 3).astype(int).tolist(), saliency) for a in range(3)])
    out = mr(preds, gts)
    assert out["HL-min-Good-mAP"] == pytest.approx(100 * np.mean(expected), abs=0.006)


# ---------------------------------------------------------------- charades and refusals


def test_charades_by_hand():
    gts = [{"qid": i, "relevant_windows": [[0, 10]]} for i in range(4)]
    preds = [pred(0, [[0, 5]]), pred(1, [[2, 10, 0.3], [0, 10, 0.9]]), pred(2, [[20, 30]]), pred(3, [])]
    out = evaluate_charades(preds, gts)
    assert out == {"R1@0.3": 50.0, "R1@0.5": 50.0, "R1@0.7": 25.0, "mIoU": round(100 * 1.3 / 4, 2)}


def test_refusal_metrics():
    gts = [gt(1, [[0, 10]]), gt(2, [[0, 10]]), gt(3, []), {**gt(4, [[0, 5]]), "relevant": False}]
    preds = [pred(1, []), pred(2, [[0, 10, 1.0]]), {**pred(3, [[0, 1, 1.0]]), "refused": True}, pred(4, [[0, 5, 1.0]])]
    out = refusal_metrics(preds, gts)
    assert out == {"refusal_acc": 50.0, "false_refusal_rate": 50.0, "num_irrelevant": 2, "num_relevant": 2}
    assert math.isnan(refusal_metrics(preds[:2], gts[:2])["refusal_acc"])


def test_refusal_metrics_by_pir_kind():
    gts = [gt(1, [[0, 10]]), {**gt(2, []), "relevance": "irrelevant"}, {**gt(3, []), "relevance": "partial"},
           {**gt(4, []), "relevance": "partial"}]
    preds = [pred(1, [[0, 10, 1.0]]), pred(2, []), pred(3, []), pred(4, [[0, 1, 1.0]])]
    out = refusal_metrics(preds, gts)
    assert out["refusal_acc"] == round(200 / 3, 2) and out["false_refusal_rate"] == 0.0
    assert out["refusal_acc_irrelevant"] == 100.0 and out["refusal_acc_partial"] == 50.0


def test_irrelevant_ground_truth_is_rejected_by_grounding_metrics():
    with pytest.raises(ValueError, match="qid 3 has no relevant window"):
        mr([pred(3, [[0, 1, 1.0]])], [gt(3, [])])


# ---------------------------------------------------------------- the eval command


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_eval_command_end_to_end(tmp_path, capsys):
    gts = [gt(q, [[0, 10]], duration=10, clips=[0], scores=[[4, 4, 4]]) for q in range(3)]
    preds = [pred(0, [[0, 10, 1.0]], [1, 0, 0, 0, 0]), pred(1, [[0, 5, 1.0]], [0, 1, 0, 0, 0]),
             pred(2, [[20, 30, 1.0]], [1, 0, 0, 0, 0])]
    pred_path = write_jsonl(tmp_path / "preds.jsonl", preds)
    gt_path = write_jsonl(tmp_path / "gt.jsonl", gts)
    assert cli_main(["eval", "--pred", pred_path, "--gt", gt_path]) == 0
    written = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert written == evaluate_qvhighlights(preds, gts)
    assert written["MR-full-R1@0.5"] == round(200 / 3, 2) and written["HL-min-VeryGood-Hit1"] == round(200 / 3, 2)
    table = capsys.readouterr().out
    assert "MR-full-mAP" in table and "wrote" in table

    out_path = tmp_path / "charades.json"
    assert cli_main(["eval", "--pred", pred_path, "--gt", gt_path, "--dataset", "charades", "--out", str(out_path)]) == 0
    assert json.loads(out_path.read_text())["R1@0.5"] == round(200 / 3, 2)


def test_eval_command_strict_fails_on_a_reversed_window(tmp_path, capsys):
    gts = [gt(q, [[0, 10]], duration=10, clips=[0], scores=[[4, 4, 4]]) for q in range(2)]
    preds = [pred(0, [[0, 10, 1.0]], [1, 0, 0, 0, 0]), pred(1, [[0.0, -2.0, 1.0]], [0, 1, 0, 0, 0])]
    pred_path = write_jsonl(tmp_path / "preds.jsonl", preds)
    gt_path = write_jsonl(tmp_path / "gt.jsonl", gts)
    with pytest.warns(UserWarning):  # scored as the official scorer does, with one warning
        assert cli_main(["eval", "--pred", pred_path, "--gt", gt_path]) == 0
    assert json.loads((tmp_path / "preds.metrics.json").read_text())["MR-full-R1@0.5"] == 50.0
    capsys.readouterr()
    assert cli_main(["eval", "--pred", pred_path, "--gt", gt_path, "--strict"]) == 2
    assert "tempo-fast eval: error" in capsys.readouterr().err


def test_eval_command_scores_refusals_under_pir(tmp_path):
    gts = [gt(0, [[0, 10]]), {**gt(1, []), "relevant": False}]
    preds = [pred(0, [[0, 10, 1.0]]), pred(1, [])]
    out = tmp_path / "m.json"
    assert cli_main(["eval", "--pred", write_jsonl(tmp_path / "p.jsonl", preds),
                     "--gt", write_jsonl(tmp_path / "g.jsonl", gts), "--dataset", "charades", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"refusal_acc": 100.0, "false_refusal_rate": 0.0, "num_irrelevant": 1,
                                           "num_relevant": 1, "R1@0.3": 100.0, "R1@0.5": 100.0, "R1@0.7": 100.0,
                                           "mIoU": 100.0}


def test_eval_command_reads_charades_json(tmp_path, shared_data):
    with open(os.path.join(shared_data, "charades_sta", "charades_sta_test.json")) as f:
        raw = json.load(f)
    vids = sorted(raw)[:20]
    gt_path = tmp_path / "charades.json"
    gt_path.write_text(json.dumps({v: raw[v] for v in vids}))
    preds = [pred(f"{v}_{i}", [list(w) + [1.0]]) for v in vids for i, w in enumerate(raw[v]["timestamps"])]
    out = tmp_path / "m.json"
    assert cli_main(["eval", "--pred", write_jsonl(tmp_path / "p.jsonl", preds), "--gt", str(gt_path),
                     "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"R1@0.3": 100.0, "R1@0.5": 100.0, "R1@0.7": 100.0, "mIoU": 100.0}


def test_eval_command_errors_name_file_and_line(tmp_path, capsys):
    gt_path = write_jsonl(tmp_path / "gt.jsonl", [gt(0, [[0, 10]])])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(pred(0, [])) + "\n\n{not json\n")
    assert cli_main(["eval", "--pred", str(bad), "--gt", gt_path]) == 2
    assert f"{bad}:3: malformed JSON" in capsys.readouterr().err
    assert cli_main(["eval", "--pred", str(tmp_path / "absent.jsonl"), "--gt", gt_path]) == 2
    assert "no such file" in capsys.readouterr().err
    bad.write_text('{"vid": "x"}\n')
    assert cli_main(["eval", "--pred", str(bad), "--gt", gt_path]) == 2
    assert f"{bad}:1: record has no 'qid'" in capsys.readouterr().err
