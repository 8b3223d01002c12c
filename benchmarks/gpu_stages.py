"""The stages of benchmarks/gpu_suite.py, in the order they run, each with its time budget (s).

A stage is a function of the suite's Context that returns headline figures (a dict) or raises
(Skip when something it needs is missing on the machine). On the GPU it measures; in the dry run
(`ctx.dry_run`) it runs at toy CPU sizes or checks its plan without running. The budgets add up
to the suite's 540 s; the slowest parts are the model-sized stages at the end.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent


class Skip(Exception):
    """The stage cannot run here (a missing package, tool or GPU); the reason is recorded."""


class _Parsed(Exception):
    """Raised by the patched parse_args once a command line parsed: a plan check stops there."""

    def __init__(self, namespace):
        super().__init__("parsed")
        self.namespace = namespace


@dataclass
class Stage:
    name: str
    budget: float
    run: Callable


def check_command_line(main: Callable, argv: list[str]) -> argparse.Namespace:
    """Parse argv with the parser `main(argv)` builds, without running anything after it.
    Raises ValueError with argparse's message when a flag is unknown or a value invalid."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    def fail(self, message):
        raise ValueError(f"{self.prog}: {message}")

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop), \
            mock.patch.object(argparse.ArgumentParser, "error", fail):
        try:
            main(argv)
        except _Parsed as done:
            return done.namespace
    raise ValueError(f"{getattr(main, '__module__', main)}: returned without parsing its command line")


def _python() -> str:
    return sys.executable


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------- machine and ceilings

def env_stage(ctx) -> dict:
    """Versions, what is installed and the GPU, to env.txt."""
    from importlib import metadata

    import torch

    lines = [f"python {sys.version.split()[0]}", f"torch {torch.__version__} (CUDA {torch.version.cuda})"]
    for name in ("triton", "transformers", "liger-kernel", "trl", "cut-cross-entropy", "torchcodec", "av",
                 "nvidia-dali-cuda130", "numba", "datasets", "accelerate"):
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}: missing")
    native = list((ROOT / "tempo_fast").glob("_C*.so"))
    lines.append(f"tempo_fast._C: {native[0].name if native else 'not built'}")
    lines.append(f"ffmpeg: {shutil.which('ffmpeg') or 'missing'}")
    figures = {}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        lines.append(f"gpu {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB")
        figures = {"gpu": props.name, "sms": props.multi_processor_count}
    (ctx.out / "env.txt").write_text("\n".join(lines) + "\n")
    ctx.log("\n".join(lines))
    return figures


def ceilings_stage(ctx) -> dict:
    """Device-to-device copy bandwidth (bytes read + written) and the 8192^3 bf16 GEMM rate."""
    import torch

    from benchmarks.common import append_rows, device_name, time_ms

    device = ctx.device
    copy_bytes, n, dtype = (1 << 30, 8192, torch.bfloat16) if ctx.cuda else (16 << 20, 256, torch.float32)
    gbs = 2 * copy_bytes / (_copy_ms(copy_bytes, device, time_ms) * 1e-3) / 1e9
    a = torch.randn(n, n, device=device, dtype=dtype)  # random data: zeros run faster than real inputs
    b = torch.randn(n, n, device=device, dtype=dtype)
    tflops = 2 * n**3 / (time_ms(lambda: a @ b, device) * 1e-3) / 1e12
    base = dict(what="ceiling", provider="torch", device=device_name(device))
    rows = [dict(base, mode="copy", shape=f"{copy_bytes >> 20}MiB", dtype="uint8", metric="bandwidth",
                 median=gbs, unit="GB/s"),
            dict(base, mode="gemm", shape=f"{n}x{n}x{n}", dtype=str(dtype).removeprefix("torch."), metric="rate",
                 median=tflops, unit="TFLOP/s")]
    append_rows_to(ctx, "ceilings.csv", rows, append_rows)
    return {"copy_GBps": gbs, "gemm_TFLOPs": tflops}


def _copy_ms(nbytes: int, device: str, time_ms) -> float:
    import torch

    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return time_ms(lambda: dst.copy_(src), device)


def append_rows_to(ctx, name: str, rows: list[dict], append_rows) -> None:
    import benchmarks.common as common

    with mock.patch.object(common, "RESULTS", ctx.results):
        append_rows(name, rows)


# ---------------------------------------------------------------- GPU tests

def _gpu_test_files() -> list[str]:
    files = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        text = path.read_text()
        if "mark.gpu" in text or "pytest.mark.gpu" in text:
            files.append(str(path.relative_to(ROOT)))
    return files


def gpu_tests_stage(ctx) -> dict:
    """pytest -m gpu over the files that mark GPU tests (JUnit report in $OUT). Dry run: count
    the marked test functions instead (CI imports and runs every test file anyway)."""
    files = _gpu_test_files()
    if not files:
        raise RuntimeError("no test file marks a test with pytest.mark.gpu")
    if ctx.dry_run:
        return {"files": len(files), "marked_tests": _count_marked(files)}
    report = ctx.out / "gpu_tests.xml"
    try:
        ctx.run([_python(), "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                 "--continue-on-collection-errors", f"--junitxml={report}", *files])
    except RuntimeError:  # failing tests: the report says which
        if not report.exists():
            raise
    return junit_counts(report)


def _count_marked(files: list[str]) -> int:
    import ast

    count = 0
    for name in files:
        for node in ast.walk(ast.parse((ROOT / name).read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                count += any("mark.gpu" in ast.unparse(d) for d in node.decorator_list)
    if count == 0:
        raise RuntimeError(f"no test function carries @pytest.mark.gpu in {files}")
    return count


def junit_counts(path: Path) -> dict:
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    if counts["tests"] == 0:
        raise RuntimeError("pytest -m gpu selected no tests")
    if counts["failures"] or counts["errors"]:
        counts["status"] = f"FAILED: {counts['failures']} failures, {counts['errors']} errors"
    return counts


# ---------------------------------------------------------------- benchmarks

def bench(script: str, gpu_args: list[str], *, needs: tuple[str, ...] = (), headline: str = "time",
          no_ffmpeg_args: list[str] | None = None) -> Callable:
    """A stage running benchmarks/<script> with `gpu_args` (plan-checked in the dry run).

    needs: modules or "ffmpeg" without which the stage is skipped; no_ffmpeg_args: use these
    arguments instead when ffmpeg is missing (the parts that need clips left out)."""
    def stage(ctx) -> dict:
        args = list(gpu_args)
        if shutil.which("ffmpeg") is None and no_ffmpeg_args is not None:
            args = list(no_ffmpeg_args)
        if ctx.dry_run:
            module = importlib.import_module(f"benchmarks.{Path(script).stem}")
            namespace = check_command_line(module.main, args)
            return {"plan": f"{script} {' '.join(args)}", "parsed": len(vars(namespace))}
        missing = [n for n in needs if (shutil.which(n) is None if n == "ffmpeg" else not _has(n))]
        if missing:
            raise Skip(f"missing {', '.join(missing)}")
        ctx.run([_python(), "-c", "import sys; from benchmarks.gpu_suite import bench_entry; sys.exit(bench_entry())",
                 f"benchmarks/{script}", str(ctx.results), *args])
        return headline_figures(ctx, headline)
    return stage


def headline_figures(ctx, metric: str) -> dict:
    """The best provider's median per (what, mode) for `metric`, from the rows this stage wrote
    (lowest for times and memory, highest for rates)."""
    import csv
    import math

    best: dict = {}
    for path in ctx.results.glob("*.csv"):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    value = float(row["median"])
                except ValueError:
                    continue
                if row["metric"] != metric or math.isnan(value):
                    continue
                lower = row["unit"] in ("ms", "s", "MiB")
                key = f"{row['what']} {row['mode']}"
                if key not in best or (value < best[key][1]) == lower:
                    best[key] = (row["provider"], value)
    return {k: f"{p} {v:.4g}" for k, (p, v) in list(best.items())[:6]}


# ---------------------------------------------------------------- tile sweep and training

def tiles_stage(ctx) -> dict:
    if ctx.dry_run:  # the sweep's configs, run for correctness in Triton's interpreter at toy sizes
        ctx.run([_python(), "benchmarks/bench_tiles.py", "--device", "cpu", "--results", str(ctx.results)],
                env={"TRITON_INTERPRET": "1"})
        return {"status": "ok (interpreter, correctness only)"}
    return bench("bench_tiles.py", ["--device", "cuda", "--results", str(ctx.results)])(ctx)


def _train_argv(command: str, model: str, ctx, steps: int) -> list[str]:
    work = ctx.work / command
    argv = [command, "--model-name", model, "--run-device", ctx.device, "--run-steps", str(steps),
            "--run-batch-size", "2", "--run-log-every", "1", "--run-save-every", "0", "--no-run-resume",
            "--no-run-progress", "--run-out-dir", str(work / "run"), "--data-root", str(ctx.work / "data"),
            "--data-num-videos", "8"]
    if ctx.cuda:
        argv += ["--model-dtype", "bfloat16"]
    if command == "grpo":
        argv += ["--num-generations", "4", "--max-new-tokens", "32"]
    return argv


def training_stage(ctx) -> dict:
    """A few bf16 SFT and GRPO steps on a Qwen2.5-VL-7B-shaped model cut to 2 + 2 layers."""
    try:
        from tempo_fast.model import shapes
    except ImportError as exc:
        raise Skip(f"tempo_fast.model.shapes is not there yet ({exc})")
    builder = shapes.build_shaped_checkpoint
    params = inspect.signature(builder).parameters
    for name in ("kind", "out_dir", "text_layers", "vision_blocks"):
        if name not in params:
            raise RuntimeError(f"build_shaped_checkpoint has no parameter {name!r}: {inspect.signature(builder)}")
    from tempo_fast import cli

    if ctx.dry_run:
        for command in ("sft", "grpo"):
            check_command_line(cli.main, _train_argv(command, "tiny", ctx, 1))
        return {"plan": "build_shaped_checkpoint('qwen2.5-vl-7b', 2 + 2 layers); sft 3 steps; grpo 2 steps"}
    if shutil.which("ffmpeg") is None or not _has("torchcodec"):
        raise Skip("the synthetic training clips need ffmpeg and torchcodec")
    path = ctx.work / "qwen2.5-vl-7b-2x2"
    ctx.run([_python(), "-c", "import sys; from tempo_fast.model.shapes import build_shaped_checkpoint as b; "
             "b('qwen2.5-vl-7b', sys.argv[1], text_layers=2, vision_blocks=2)", str(path)], timeout=60)
    figures = {}
    for command, steps in (("sft", 3), ("grpo", 2)):
        ctx.run([_python(), "-m", "tempo_fast", *_train_argv(command, str(path), ctx, steps)])
        figures[f"{command}_s_per_step"] = step_seconds(ctx.work / command / "run" / "metrics.jsonl")
    rows = [dict(what=f"train_{name.split('_')[0]}", provider="tempo_fast", mode="bf16",
                 shape="qwen2.5-vl-7b 2+2 layers, batch 2", dtype="bfloat16", metric="step_time", median=value,
                 unit="s", device=_device_name(ctx)) for name, value in figures.items() if value is not None]
    from benchmarks.common import append_rows
    append_rows_to(ctx, "train_steps.csv", rows, append_rows)
    return figures


def step_seconds(metrics: Path):
    """Median seconds between consecutive logged steps (the first step's compile/warm-up left out)."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    times = [b["time"] - a["time"] for a, b in zip(lines, lines[1:])]
    return sorted(times)[len(times) // 2] if times else None


def _device_name(ctx) -> str:
    from benchmarks.common import device_name
    return device_name(ctx.device)


def plan(ctx) -> list[Stage]:
    """The stages in order; budgets in seconds (sum 540)."""
    return [
        Stage("env", 10, env_stage),
        Stage("ceilings", 20, ceilings_stage),
        Stage("gpu_tests", 65, gpu_tests_stage),
        Stage("logprobs", 75, bench("bench_logprobs.py", ["--device", "cuda", "--sizes", "8192"])),
        Stage("grpo_loss", 60, bench("bench_grpo_loss.py", ["--device", "cuda", "--sizes", "8192"])),
        Stage("tiles", 45, tiles_stage),
        Stage("jit_facts", 20, bench("sm90_jit.py", ["--device", "cuda"], headline="spill_bytes")),
        Stage("saa", 25, bench("bench_saa.py", ["--device", "cuda"], headline="time",
                               no_ffmpeg_args=["--device", "cuda", "--skip-sample"])),
        Stage("decode", 35, bench("bench_decode.py", ["--device", "cuda", "--resolutions", "720p", "1080p",
                                                      "--seconds", "10"], needs=("ffmpeg", "torchcodec"),
                                  headline="frames_per_s")),
        Stage("training", 90, training_stage),
        Stage("grpo_step", 60, bench("bench_grpo_step.py", ["--device", "cuda", "--steps", "3", "--providers",
                                                            "tempo_fast", *(["trl"] if _has("trl") else [])],
                                     headline="ms_per_step")),
        Stage("infer", 35, bench("bench_infer.py", ["--device", "cuda"], headline="tokens_per_s",
                                 no_ffmpeg_args=["--device", "cuda", "--no-predict"])),
    ]
