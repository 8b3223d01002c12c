"""`tempo-fast eval`: score a prediction file against ground truth, print the metrics as a table
and write them as JSON.

    tempo-fast eval --pred preds.jsonl --gt highlight_val_release.jsonl
    tempo-fast eval --pred preds.jsonl --gt charades_test.jsonl --dataset charades --out m.json

Predictions are JSONL in the QVHighlights layout (see `tempo_fast.metrics`). Ground truth is
QVHighlights-layout JSONL, or any layout `tempo_fast.data.load_annotations` reads (Charades-STA
JSON or text, query ids `"{video_id}_{i}"`). When the ground truth holds irrelevant queries (PIR:
`relevance` other than "relevant", `"relevant": false`, or no window), the refusal metrics are
scored on all queries and the grounding metrics on the relevant ones only.
"""
from __future__ import annotations

import json
import math
import os
import sys

DATASETS = ("auto", "qvhighlights", "charades")


def add_arguments(parser) -> None:
    parser.add_argument("--pred", required=True, help="prediction JSONL (qid, pred_relevant_windows, ...)")
    parser.add_argument("--gt", required=True,
                        help="ground truth: JSONL (qid, relevant_windows, ...) or a Charades-STA file")
    parser.add_argument("--dataset", choices=DATASETS, default="auto",
                        help="metric set; auto: qvhighlights when the ground truth has saliency_scores")
    parser.add_argument("--missing", choices=("error", "miss", "skip"), default="error",
                        help="ground-truth queries without a prediction: fail, count as misses, or leave out")
    parser.add_argument("--strict", action="store_true",
                        help="fail on a malformed predicted window (end before start, non-finite) instead of "
                             "scoring it as the official scorer does (with one warning)")
    parser.add_argument("--out", default=None, help="metrics JSON; when not given, PRED with .metrics.json")


def default_out(pred_path: str) -> str:
    root, ext = os.path.splitext(pred_path)
    return (root if ext in (".jsonl", ".json") else pred_path) + ".metrics.json"


def read_ground_truth(path: str) -> list[dict]:
    """QVHighlights-layout JSONL as is; another layout through the annotation loaders, unclipped."""
    from tempo_fast.metrics import read_jsonl

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if isinstance(head, dict) and "qid" in head:
        return read_jsonl(path)
    from tempo_fast.data import load_annotations

    return [record.to_json() for record in load_annotations(path, clip=False)]


def evaluate(predictions: list[dict], ground_truth: list[dict], dataset: str, missing: str, *,
             strict: bool = False) -> dict:
    """The metrics of one prediction set: grounding metrics, plus refusal metrics under PIR."""
    from tempo_fast import metrics

    if dataset == "auto":
        dataset = "qvhighlights" if ground_truth and all("saliency_scores" in g for g in ground_truth) else "charades"
    score = metrics.evaluate_qvhighlights if dataset == "qvhighlights" else metrics.evaluate_charades
    relevant = {g["qid"] for g in ground_truth if metrics.is_relevant(g)}
    if len(relevant) == len(ground_truth):
        return score(predictions, ground_truth, missing=missing, strict=strict)
    out = metrics.refusal_metrics(predictions, ground_truth, missing=missing)
    if relevant:
        out.update(score([p for p in predictions if p["qid"] in relevant],
                         [g for g in ground_truth if g["qid"] in relevant], missing=missing, strict=strict))
    return out


def format_table(values: dict) -> str:
    width = max(len(k) for k in values)
    lines = [f"{'metric':<{width}}  {'value':>8}", f"{'-' * width}  {'-' * 8}"]
    for key, value in values.items():
        if isinstance(value, float):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
        else:
            text = str(value)
        lines.append(f"{key:<{width}}  {text:>8}")
    return "\n".join(lines)


def run(args) -> int:
    from tempo_fast.metrics import read_jsonl

    try:
        predictions = read_jsonl(args.pred)
        ground_truth = read_ground_truth(args.gt)
        values = evaluate(predictions, ground_truth, args.dataset, args.missing, strict=args.strict)
    except (OSError, ValueError, TypeError, KeyError) as e:
        print(f"tempo-fast eval: error: {e}", file=sys.stderr)
        return 2
    print(format_table(values))
    out = args.out or default_out(args.pred)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}, f, indent=2)
        f.write("\n")
    print(f"wrote {out}")
    return 0
