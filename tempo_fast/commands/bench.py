"""`tempo-fast bench [NAME] [ARGS...]`: run benchmarks/bench_NAME.py (the kernel benchmarks when
no name is given) from the source checkout; ARGS go to that benchmark's own parser.

`tempo-fast bench --suite gpu [ARGS...]` runs benchmarks/gpu_suite.py instead (every GPU
measurement in one call; `--suite gpu --device cpu --dry-run --out DIR` is its CPU plan check)."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

DEFAULT = ("logprobs", "grpo_loss")


def _benchmarks_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    path = root / "benchmarks"
    if not (path / "common.py").is_file():
        raise SystemExit(f"tempo-fast bench: no benchmarks/ folder beside the package at {root}; "
                         "the benchmarks ship with the source checkout (git clone, then pip install -e .)")
    return path


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in _benchmarks_dir().glob("bench_*.py"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None,
                        help="benchmark to run (e.g. logprobs, grpo_loss, saa, decode); default: the kernel benchmarks")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark (see its --help)")
    # REMAINDER: every argument after "--suite gpu" belongs to the suite's own parser
    parser.add_argument("--suite", nargs=argparse.REMAINDER, default=None, metavar="gpu [ARGS]",
                        help="run a suite instead of one benchmark: 'gpu' is benchmarks/gpu_suite.py, "
                             "the arguments after it go to the suite (see --suite gpu --help)")


def run(args: argparse.Namespace) -> int:
    bench_dir = _benchmarks_dir()
    if args.suite is not None:
        if args.suite[:1] != ["gpu"] or args.name:
            raise SystemExit(f"tempo-fast bench: --suite takes 'gpu' and then the suite's arguments, got "
                             f"{' '.join(([args.name] if args.name else []) + ['--suite', *args.suite])!r}")
        sys.path.insert(0, str(bench_dir.parent))
        from benchmarks import gpu_suite
        return int(gpu_suite.main(args.suite[1:]) or 0)
    names = [args.name] if args.name else list(DEFAULT)
    known = available()
    for name in names:
        if name not in known:
            raise SystemExit(f"tempo-fast bench: unknown benchmark {name!r}; available: {', '.join(known)}")
    sys.path.insert(0, str(bench_dir.parent))
    status = 0
    for name in names:
        print(f"== bench_{name} ==", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        status |= int(module.main(list(args.args)) or 0)
    return status
