"""Every GPU measurement of the project in one call (one H200, <= 9 minutes), or its CPU dry run.

    python -m benchmarks.gpu_suite --out "$OUT"                       # on the GPU machine
    benchmarks/gpu_suite.sh                                           # the same, after installing carried wheels
    tempo-fast bench --suite gpu --out DIR                            # the same through the CLI
    python -m benchmarks.gpu_suite --device cpu --dry-run --out DIR   # CI (tests/test_gpu_suite.py), ~30-60 s
    python -m benchmarks.gpu_suite --import-results DIR/results.csv   # the run's rows into benchmarks/results/

Stages (benchmarks/gpu_stages.py) run in order, each under its own time budget (seconds, plus
whatever earlier stages left unused, never taking from the stages after it) and a global
deadline; a stage that fails, times out or lacks what it needs is recorded and the suite goes on.
Benchmarks run as subprocesses with their rows redirected to a work folder; at the end every new
row goes to one long-format `results.csv` (benchmarks/common.py FIELDS plus `file`, the
benchmarks/results/ CSV it belongs to). The GPU tool returns at most 8 files, so $OUT holds:
summary.md (printed last), results.csv, suite.log (every stage's output), stages.json,
gpu_tests.xml (JUnit) and env.txt.

Dry run (`--device cpu --dry-run`): every stage runs at toy sizes on the CPU (ceilings, the tile
sweep in Triton's interpreter) or checks its plan: the benchmark and training command lines are
parsed by the scripts' own parsers without running, the GPU tests are collected, the shaped
model builder's signature is checked. So a renamed flag or a missing script fails CI.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUDGET_S = 540  # the whole suite: 9 minutes, inside the tool's 10-minute command limit
RESERVE_S = 15  # kept for the summary when the deadline nears


@dataclass
class Context:
    """What a stage gets: where to write, how long it may take, whether this is the dry run."""
    device: str
    dry_run: bool
    out: Path  # files that come back ($OUT)
    work: Path  # scratch: clips, checkpoints, per-benchmark CSVs
    log_path: Path
    deadline: float  # time.monotonic() by which the whole suite must be done
    budget: float = 0.0  # seconds the current stage may take
    rows: list = field(default_factory=list)  # rows (dicts with "file") the suite adds to results.csv

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def results(self) -> Path:
        return self.work / "results"

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def remaining(self) -> float:
        return min(self.budget, self.deadline - time.monotonic() - RESERVE_S)

    def run(self, argv: list[str], *, env: dict | None = None, timeout: float | None = None) -> int:
        """Run a command with its output appended to the log; kill its process group at the budget.
        Raises on a non-zero exit or a timeout."""
        limit = max(1.0, self.remaining() if timeout is None else min(timeout, self.remaining()))
        self.log(f"$ {' '.join(argv)}   (limit {limit:.0f} s)")
        with open(self.log_path, "a") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
            try:
                code = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise TimeoutError(f"{argv[1] if len(argv) > 1 else argv[0]} passed its {limit:.0f} s budget")
        if code != 0:
            raise RuntimeError(f"exit {code}: {' '.join(argv[:4])} ... (see suite.log)")
        return code


def bench_entry() -> int:
    """Subprocess entry: run a bench script with benchmarks.common.RESULTS pointed at a folder.

    argv: <script.py> <results folder> [script args...]"""
    import benchmarks.common as common

    script, results, *args = sys.argv[1:]
    common.RESULTS = Path(results)
    sys.argv = [script, *args]
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0) if not isinstance(done.code, str) else 1
    return 0


def collect_rows(ctx: Context) -> None:
    """Move the rows the benchmarks wrote to ctx.results into ctx.rows (with their file names)."""
    for path in sorted(ctx.results.glob("*.csv")):
        with open(path, newline="") as f:
            ctx.rows += [dict(row, file=path.name) for row in csv.DictReader(f)]
        path.unlink()


def write_results(ctx: Context) -> Path:
    from benchmarks.common import FIELDS

    path = ctx.out / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS + ["file"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ctx.rows)
    return path


def import_results(path: str) -> int:
    """Append a suite's results.csv rows to benchmarks/results/<file> (the common columns kept)."""
    from benchmarks.common import FIELDS, RESULTS

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by_file: dict[str, list] = {}
    for row in rows:
        name = Path(row.pop("file") or "gpu_suite.csv").name
        by_file.setdefault(name, []).append(row)
    for name, group in by_file.items():
        target = RESULTS / name
        new = not target.exists()
        with open(target, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(group)
        print(f"{len(group):5d} rows -> {target}")
    return 0


def summary(ctx: Context, stages: list[dict]) -> str:
    """Markdown: the stage table, then each stage's headline figures."""
    lines = [f"# GPU suite ({'dry run, ' if ctx.dry_run else ''}device {ctx.device})", "",
             "| stage | status | seconds | budget | figures |", "| --- | --- | --- | --- | --- |"]
    for s in stages:
        figures = "; ".join(f"{k} {_fmt(v)}" for k, v in s.get("figures", {}).items())
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['budget']:.0f} | {figures} |")
    lines += timings_table(ctx.rows)
    lines += ["", f"{len(ctx.rows)} result rows in results.csv; logs in suite.log"]
    return "\n".join(lines)


def timings_table(rows: list[dict], limit: int = 40) -> list[str]:
    """Markdown lines: per (what, mode, shape, dtype), every provider's median time, fastest first,
    with its ratio to the fastest; at most `limit` lines."""
    groups: dict = {}
    for row in rows:
        if row.get("metric") not in ("time", "ms_per_step") or row.get("unit") not in ("ms", "s"):
            continue
        try:
            value = float(row["median"])
        except (TypeError, ValueError):
            continue
        if value == value:  # not NaN
            key = (row["what"], row["mode"], row["shape"], row["dtype"])
            groups.setdefault(key, []).append((value, row["provider"], row["unit"]))
    if not groups:
        return []
    lines = ["", "| what | mode | shape | dtype | providers, fastest first (median, x fastest) |",
             "| --- | --- | --- | --- | --- |"]
    for (what, mode, shape, dtype), found in list(groups.items())[:limit]:
        found.sort()
        best = found[0][0]
        cells = ", ".join(f"{p} {v:.4g} {u} ({v / best:.2f}x)" for v, p, u in found)
        lines.append(f"| {what} | {mode} | {shape} | {dtype} | {cells} |")
    return lines


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_suite(ctx: Context, only: list[str] | None = None, skip: list[str] | None = None) -> list[dict]:
    from benchmarks import gpu_stages

    done = []
    stages = gpu_stages.plan(ctx)
    selected = [s for s in stages if not ((only and s.name not in only) or (skip and s.name in skip))]
    for stage in stages:
        record = dict(name=stage.name, budget=float(stage.budget), seconds=0.0, figures={})
        if stage not in selected:
            done.append(dict(record, status="not selected"))
            continue
        # its own budget, plus what earlier stages left unused (the later stages keep theirs)
        later = sum(s.budget for s in selected[selected.index(stage) + 1:])
        ctx.budget = max(stage.budget, ctx.deadline - time.monotonic() - RESERVE_S - later)
        record["budget"] = round(ctx.budget)
        if ctx.remaining() < 5:
            done.append(dict(record, status="no time left"))
            continue
        ctx.log(f"\n===== stage {stage.name} (budget {stage.budget} s) =====")
        start = time.monotonic()
        try:
            result = stage.run(ctx) or {}
            record["status"] = result.pop("status", "ok")
            record["figures"] = result
        except gpu_stages.Skip as why:
            record["status"] = f"skipped: {why}"
        except Exception as exc:  # a failed stage is a result; the suite goes on
            record["status"] = f"FAILED: {type(exc).__name__}: {str(exc)[:160]}"
            ctx.log(traceback.format_exc())
        record["seconds"] = time.monotonic() - start
        collect_rows(ctx)
        ctx.log(f"----- {stage.name}: {record['status']} in {record['seconds']:.1f} s")
        print(f"[{stage.name}] {record['status']} ({record['seconds']:.0f} s)", flush=True)
        done.append(record)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT"),
                        help="folder for the files that come back (default: $OUT)")
    parser.add_argument("--device", default="cuda", help="cuda (the real run) or cpu (with --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes and plan checks (CPU, for CI)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole suite")
    parser.add_argument("--only", nargs="+", help="run only these stages")
    parser.add_argument("--skip", nargs="+", help="skip these stages")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    parser.add_argument("--import-results", metavar="CSV",
                        help="append a run's results.csv to benchmarks/results/ and exit")
    args = parser.parse_args(argv)
    if args.import_results:
        return import_results(args.import_results)
    if not args.out:
        parser.error("--out is needed when $OUT is not set")
    if args.device.startswith("cuda") and args.dry_run:
        parser.error("--dry-run runs on the CPU: use --device cpu")
    if not args.device.startswith("cuda") and not args.dry_run:
        parser.error(f"--device {args.device}: the real suite measures a GPU; add --dry-run for the CPU plan check")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_suite_"))
    ctx = Context(device=args.device, dry_run=args.dry_run, out=out, work=work, log_path=out / "suite.log",
                  deadline=time.monotonic() + args.budget)
    ctx.results.mkdir(parents=True, exist_ok=True)
    ctx.log_path.write_text("")
    stages = run_suite(ctx, args.only, args.skip)
    write_results(ctx)
    (out / "stages.json").write_text(json.dumps(stages, indent=1, default=str) + "\n")
    text = summary(ctx, stages)
    (out / "summary.md").write_text(text + "\n")
    print(text, flush=True)
    failed = [s for s in stages if s["status"].startswith("FAILED")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
