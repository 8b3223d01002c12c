"""Benchmark: scoring a QVHighlights prediction set with `tempo_fast.metrics.evaluate_qvhighlights`
against the official Moment-DETR standalone scorer, when one is given.

    python benchmarks/bench_metrics.py                                   # ours only
    python benchmarks/bench_metrics.py --official ~/moment_detr/standalone_eval/eval.py
    python benchmarks/bench_metrics.py --official ... --repeat 10        # 15,500 queries

The official scorer is not shipped: pass the path of its `standalone_eval/eval.py` (it needs
scikit-learn; it scores with a pool of 8 processes, as it is written). Both providers score the
same records, already loaded from JSONL; the brief dicts must agree before anything is timed.
Rows go to benchmarks/results/metrics.csv.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_rows, print_table, time_ms  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qvhighlights"


def load_official(path: str):
    """Import the official `eval.py` as `standalone_eval.eval` (it imports its package's utils)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"--official: no such file: {path}")
    if path.parent.name == "standalone_eval":
        sys.path.insert(0, str(path.parent.parent))
        return importlib.import_module("standalone_eval.eval")
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("official_eval", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiled(records: list[dict], repeat: int) -> list[dict]:
    """The records `repeat` times, with distinct qids."""
    if repeat == 1:
        return records
    return [{**r, "qid": f"{k}:{r['qid']}"} for k in range(repeat) for r in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", default=str(DEFAULT_DATA / "sample_val_preds.jsonl"), help="prediction JSONL")
    parser.add_argument("--gt", default=str(DEFAULT_DATA / "highlight_val_release.jsonl"), help="ground-truth JSONL")
    parser.add_argument("--official", default=None, help="path to the official standalone_eval/eval.py")
    parser.add_argument("--repeat", type=int, default=1, help="score the set this many times over (distinct qids)")
    parser.add_argument("--reps", type=int, default=7, help="timed runs of ours (median reported)")
    parser.add_argument("--official-reps", type=int, default=1, help="timed runs of the official scorer")
    args = parser.parse_args(argv)

    from tempo_fast.metrics import evaluate_qvhighlights, read_jsonl

    preds = tiled(read_jsonl(args.pred), args.repeat)
    gts = tiled(read_jsonl(args.gt), args.repeat)
    shape = f"{len(gts)}q"
    ours = evaluate_qvhighlights(preds, gts)
    providers = {"tempo_fast": (lambda: evaluate_qvhighlights(preds, gts), dict(warmup=1, reps=args.reps))}

    if args.official:
        official = load_official(args.official)

        def run_official():
            with contextlib.redirect_stdout(io.StringIO()):  # it prints progress whatever verbose says
                return official.eval_submission(preds, gts, verbose=False)["brief"]

        reference = run_official()
        if dict(reference) != ours:
            diff = {k: (reference.get(k), ours.get(k)) for k in set(reference) | set(ours) if reference.get(k) != ours.get(k)}
            print(f"MISMATCH (official, ours): {diff}")
            return 1
        print(f"brief dicts agree on {len(ours)} keys")
        providers["official"] = (run_official, dict(warmup=0, reps=args.official_reps))

    rows, medians = [], {}
    for name, (fn, timing) in providers.items():
        ms = time_ms(fn, "cpu", **timing)
        medians[name] = ms
        common = dict(what="qvhighlights_eval", provider=name, mode="score", shape=shape, dtype="float64", device="cpu")
        rows.append({**common, "metric": "time", "median": ms, "unit": "ms"})
        rows.append({**common, "metric": "throughput", "median": len(gts) / (ms * 1e-3), "unit": "queries/s"})
    if "official" in medians:
        rows.append(dict(what="qvhighlights_eval", provider="tempo_fast/official", mode="score", shape=shape,
                         dtype="float64", device="cpu", metric="speedup",
                         median=medians["official"] / medians["tempo_fast"], unit="x"))
    print_table(rows)
    print(f"appended to {append_rows('metrics.csv', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
