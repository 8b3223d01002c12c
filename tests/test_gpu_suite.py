"""The one-call GPU suite (benchmarks/gpu_suite.py) cannot rot while no GPU comes: its CPU dry run
runs every stage at toy sizes or checks its plan (command lines parsed by the scripts' own
parsers, GPU tests counted, the shaped-model builder's signature), in ~30 s."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_suite, gpu_stages

ROOT = Path(__file__).resolve().parent.parent
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what the device tool brings back from $OUT


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite_out")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the suite sets it where needed
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--device", "cpu", "--dry-run",
                           "--out", str(out), "--work", str(tmp_path_factory.mktemp("suite_work"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return done, out


def test_dry_run_passes_every_stage(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (out / "summary.md").read_text()
    assert done.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])  # the table is printed last
    names = [s.name for s in gpu_stages.plan(None)]
    for name in names:
        line = next(l for l in table.splitlines() if l.startswith(f"| {name} |"))
        status = line.split("|")[2].strip()
        shapes_missing = name == "training" and not (ROOT / "tempo_fast" / "model" / "shapes.py").exists()
        expected = "skipped: tempo_fast.model.shapes" if shapes_missing else "ok"
        assert status.startswith(expected), f"stage {name}: {status}"
    assert sum(s.budget for s in gpu_stages.plan(None)) <= gpu_suite.DEFAULT_BUDGET_S


def test_dry_run_output_fits_the_device_tool(dry_run):
    _, out = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8 and all(SAFE_NAME.match(p.name) for p in files)
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ceilings = {r["mode"]: float(r["median"]) for r in rows if r["what"] == "ceiling"}
    assert set(ceilings) == {"copy", "gemm"} and all(v > 0 for v in ceilings.values())
    assert {r["file"] for r in rows} >= {"ceilings.csv", "tiles.csv"}
    tiles = [r for r in rows if r["what"].startswith("tiles:")]
    assert tiles and all(r["unit"] != "failed" for r in tiles)


def test_command_line_check_catches_a_bad_flag():
    from benchmarks import bench_logprobs

    parsed = gpu_stages.check_command_line(bench_logprobs.main, ["--device", "cuda", "--sizes", "8192"])
    assert parsed.sizes == [8192]
    with pytest.raises(ValueError, match="--no-such-flag"):
        gpu_stages.check_command_line(bench_logprobs.main, ["--no-such-flag"])


def test_import_results_splits_rows_by_file(tmp_path, monkeypatch):
    import benchmarks.common as common

    src = tmp_path / "results.csv"
    fields = common.FIELDS + ["file"]
    with open(src, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for i, name in enumerate(["a.csv", "b.csv", "a.csv"]):
            writer.writerow({**{k: "" for k in fields}, "what": f"w{i}", "median": str(i), "file": name})
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    assert gpu_suite.import_results(str(src)) == 0
    with open(tmp_path / "results" / "a.csv", newline="") as f:
        assert [r["what"] for r in csv.DictReader(f)] == ["w0", "w2"]
    with open(tmp_path / "results" / "b.csv", newline="") as f:
        assert list(csv.DictReader(f))[0]["what"] == "w1"


def test_timings_table_ranks_providers():
    rows = [dict(what="op", mode="fwd", shape="N=1", dtype="bf16", metric="time", median=m, unit="ms", provider=p)
            for p, m in (("torch", "4.0"), ("ours", "2.0"), ("broken", "nan"))]
    lines = gpu_suite.timings_table(rows)
    assert lines[-1] == "| op | fwd | N=1 | bf16 | ours 2 ms (1.00x), torch 4 ms (2.00x) |"


def test_suite_refuses_a_cpu_run_that_is_not_a_dry_run(tmp_path):
    with pytest.raises(SystemExit):
        gpu_suite.main(["--device", "cpu", "--out", str(tmp_path)])


def test_bench_command_takes_the_suite():
    import argparse

    from tempo_fast.commands import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--suite", "gpu", "--device", "cpu", "--dry-run", "--out", "x"])
    assert args.suite == ["gpu", "--device", "cpu", "--dry-run", "--out", "x"]
    with pytest.raises(SystemExit, match="--suite takes 'gpu'"):
        bench.run(parser.parse_args(["--suite", "cpu"]))


def _context(tmp_path, budget=60.0):
    import time

    ctx = gpu_suite.Context(device="cpu", dry_run=False, out=tmp_path / "out", work=tmp_path / "work",
                            log_path=tmp_path / "out" / "suite.log", deadline=time.monotonic() + 600, budget=budget)
    ctx.out.mkdir()
    ctx.results.mkdir(parents=True)
    return ctx


def test_bench_runner_redirects_rows_and_reads_headlines(tmp_path):
    script = tmp_path / "bench_fake.py"
    script.write_text(
        "import sys\nfrom benchmarks.common import append_rows\n"
        "base = dict(what='op', mode='fwd', shape='N=1', dtype='bf16', metric='time', unit='ms')\n"
        "rows = [dict(base, provider=p, median=m) for p, m in (('torch', 3.0), ('ours', 1.5))]\n"
        "append_rows('fake.csv', rows + [dict(rows[0], metric='rate', median=7.0, unit='TFLOP/s')])\n"
        "sys.exit(int(sys.argv[1]))\n")
    ctx = _context(tmp_path)
    entry = [sys.executable, "-c", "import sys; from benchmarks.gpu_suite import bench_entry; sys.exit(bench_entry())",
             str(script), str(ctx.results)]
    ctx.run(entry + ["0"])
    assert gpu_stages.headline_figures(ctx, "time") == {"op fwd": "ours 1.5"}
    assert gpu_stages.headline_figures(ctx, "rate") == {"op fwd": "torch 7"}
    gpu_suite.collect_rows(ctx)
    assert [r["file"] for r in ctx.rows] == ["fake.csv"] * 3 and not list(ctx.results.iterdir())
    assert not (ROOT / "benchmarks" / "results" / "fake.csv").exists()
    with pytest.raises(RuntimeError, match="exit 3"):
        ctx.run(entry + ["3"])


def test_stage_over_budget_is_killed(tmp_path):
    import time

    ctx = _context(tmp_path, budget=2.0)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        ctx.run([sys.executable, "-c", "import time; time.sleep(30)"])
    assert time.monotonic() - start < 10


def test_stages_borrow_unused_time_but_leave_later_budgets(tmp_path, monkeypatch):
    import time

    seen = {}

    def stage(name):
        def run(ctx):
            seen[name] = ctx.budget
            if name == "boom":
                raise ValueError("broken stage")
            return {"value": 1.0}
        return run

    plan = [gpu_stages.Stage("first", 10, stage("first")), gpu_stages.Stage("boom", 10, stage("boom")),
            gpu_stages.Stage("last", 30, stage("last"))]
    monkeypatch.setattr(gpu_stages, "plan", lambda ctx: plan)
    ctx = _context(tmp_path)
    ctx.deadline = time.monotonic() + 100
    done = gpu_suite.run_suite(ctx)
    left = 100 - gpu_suite.RESERVE_S
    assert left - 40 - 2 < seen["first"] <= left - 40  # all but the later stages' 10 + 30 s
    assert seen["last"] > left - 2 - 5  # the whole rest
    assert [d["status"] for d in done] == ["ok", "FAILED: ValueError: broken stage", "ok"]
