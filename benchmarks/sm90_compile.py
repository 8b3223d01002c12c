"""Ahead-of-time compile facts for the H200 (sm_90a) of every Triton launch the public ops make.

No GPU is needed. `recording()` swaps Triton's JIT launch (`JITFunction.run`, and `Autotuner.run`
so that every autotune config counts) for a recorder: the public ops in `tempo_fast.ops` are
called with meta tensors (no memory) at the real shapes, the launchers pick their tiles, and each
launch is specialised exactly as the JIT would for a CUDA device — Triton's own binder and
`_pack_args` against the sm_90 backend: 16-byte divisibility of pointers and ints
(`tt.divisibility`), ints equal to 1 as constants, the constexprs and num_warps/num_stages.
Meta tensors report their offsets through `data_ptr()` from base 0, so a view's alignment is the
one a freshly allocated CUDA tensor would have. `compile_report` then compiles one launch with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))` and reads ptxas' `-v` report
(registers, spill stores and loads, stack frame), the PTX (`wgmma.mma_async`, 16-byte loads) and
the SASS (HGMMA, LDL/STL); the report is stored beside the compiled kernel in the Triton cache,
so a second run only reads files.

    python -m benchmarks.sm90_compile                 # all cases, table, rows to results/sm90_compile.csv
    python -m benchmarks.sm90_compile --json out.json # the reports as JSON (what tests/test_sm90_compile.py reads)

Needs a real Triton JIT: run it without TRITON_INTERPRET (the test starts it in a subprocess).
The cases (which op, which shapes and dtypes) are in benchmarks/sm90_cases.py.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import contextlib
import contextvars
import dataclasses
import importlib
import io
import json
import multiprocessing
import re
import sys
import time
import types
from unittest import mock

SM90_SHARED_LIMIT = 227 * 1024  # bytes of shared memory one block may use on sm_90 (opt-in maximum)
SM90_REGISTERS = 65536  # 32-bit registers per SM
SM90_MAX_BLOCKS = 32  # resident blocks per SM
H200_PROPERTIES = types.SimpleNamespace(  # what torch.cuda.get_device_properties says on the H200
    name="NVIDIA H200", major=9, minor=0, multi_processor_count=132, total_memory=150_119_546_880,
    L2_cache_size=50 * 1024 * 1024, shared_memory_per_block_optin=SM90_SHARED_LIMIT, warp_size=32,
    max_threads_per_multi_processor=2048, regs_per_multiprocessor=SM90_REGISTERS,
)
_CASE = contextvars.ContextVar("sm90_case", default="")


@dataclasses.dataclass
class Launch:
    """One kernel launch as the JIT would specialise it for sm_90 (all fields picklable)."""
    case: str  # the case that made it (see sm90_cases.py)
    kernel: str  # "module:name" of the @triton.jit function
    grid: tuple
    signature: dict  # argument name -> Triton type ("*bf16", "i32", "constexpr", ...)
    constexprs: dict  # argument index path -> value
    attrs: dict  # argument index path -> [["tt.divisibility", 16]] or []
    options: dict  # num_warps, num_stages, ... as the launcher passed them

    @property
    def key(self) -> str:
        """Identifies the compiled specialisation: launches with one key share one binary."""
        return json.dumps([self.kernel, self.signature, sorted(map(repr, self.constexprs.items())),
                           sorted(map(repr, self.attrs.items())), sorted(self.options.items())], default=str)

    @property
    def name(self) -> str:
        return self.kernel.split(":")[1]


def _target():
    from triton.backends.compiler import GPUTarget
    return GPUTarget("cuda", 90, 32)


@contextlib.contextmanager
def case(label: str):
    """Tag the launches made inside with a case label."""
    token = _CASE.set(label)
    try:
        yield
    finally:
        _CASE.reset(token)


@contextlib.contextmanager
def recording():
    """Inside: Triton launches are recorded into the yielded list instead of running, and the ops
    accept meta tensors for backend="triton" (as they accept CPU tensors under the interpreter)."""
    import triton
    from triton.compiler import make_backend
    from triton.runtime import autotuner, jit

    import torch.fx.experimental._config

    import tempo_fast.ops._backend as ops_backend

    if triton.knobs.runtime.interpret:
        raise RuntimeError("sm90_compile: TRITON_INTERPRET is set, so kernels are interpreted functions; "
                           "run without TRITON_INTERPRET")
    backend = make_backend(_target())
    binders: dict = {}
    launches: list[Launch] = []

    def record(fn, *args, grid, warmup=False, **kwargs):
        kwargs.setdefault("debug", False)
        if fn not in binders:
            binders[fn] = jit.create_function_from_signature(fn.signature, fn.params, backend)
        bound, specialization, opts = binders[fn](*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, opts)
        if callable(grid):
            grid = grid(bound)
        passed = {k: v for k, v in kwargs.items() if k in options.__dict__ and k != "debug"}
        launches.append(Launch(_CASE.get(), f"{fn.module}:{fn.__name__}", tuple(int(g) for g in grid),
                               signature, constexprs, {k: v for k, v in attrs.items()},
                               {"num_warps": options.num_warps, "num_stages": options.num_stages, **passed}))

    def record_all_configs(tuner, *args, **kwargs):
        for config in tuner.configs:  # every config the autotuner could pick
            tuner.fn.run(*args, **kwargs, **config.all_kwargs())

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(jit.JITFunction, "run", record))
        stack.enter_context(mock.patch.object(autotuner.Autotuner, "run", record_all_configs))
        stack.enter_context(mock.patch.object(ops_backend, "triton_interpreting", lambda: True))
        stack.enter_context(mock.patch("torch.cuda.get_device_properties", lambda *a, **k: H200_PROPERTIES))
        stack.enter_context(mock.patch("torch.cuda.get_device_capability", lambda *a, **k: (9, 0)))
        # nonzero() on meta tensors: every element counts as nonzero (e.g. a mask of all ones, where
        # every token is scored). Other data-dependent reads (.item(), .tolist()) fail on meta tensors.
        stack.enter_context(mock.patch.object(torch.fx.experimental._config, "meta_nonzero_assume_all_nonzero", True))
        yield launches


# ---------------------------------------------------------------- compile and read ptxas' report

_PTXAS_RE = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack_bytes": re.compile(r"(\d+) bytes stack frame"),
    "spill_store_bytes": re.compile(r"(\d+) bytes spill stores"),
    "spill_load_bytes": re.compile(r"(\d+) bytes spill loads"),
}
_REPORT_FILE = "sm90_report.json"  # stored beside each compiled kernel in the Triton cache
_REPORT_VERSION = 4  # bump when compile_report reads more facts


def parse_ptxas(log: str) -> dict:
    """Registers, stack frame and spill bytes from a `ptxas -v` log (one kernel)."""
    out = {}
    for name, pattern in _PTXAS_RE.items():
        found = pattern.findall(log)
        if not found:
            raise ValueError(f"sm90_compile: ptxas log has no '{pattern.pattern}':\n{log}")
        out[name] = int(found[-1])
    return out


_DOT_RE = re.compile(r"tt\.dot (.*)$", re.MULTILINE)


def count_dots(ttir: str) -> tuple[int, int]:
    """(dots, dots the tensor cores can run) in a kernel's TTIR: every `tt.dot` except those with
    fp32 operands at IEEE precision (printed with no inputPrecision), which wgmma cannot take."""
    dots = _DOT_RE.findall(ttir)
    fp32_operands = re.compile(r": tensor<[0-9x]+xf32> \* tensor<[0-9x]+xf32>")
    ieee_fp32 = [d for d in dots if fp32_operands.search(d)
                 and ("inputPrecision" not in d or "inputPrecision = ieee" in d)]
    return len(dots), len(dots) - len(ieee_fp32)


_CP_ASYNC_SIZE = re.compile(r"\],\s*(0x[0-9a-fA-F]+|\d+)")


def count_global_loads(ptx: str) -> tuple[int, int]:
    """(16-byte, narrower) global loads in the PTX: `ld.global[.nc].v4.b32` or a 16-byte
    `cp.async` (the dot kernels' pipelined operand copies) against every other global load."""
    wide = narrow = 0
    for line in ptx.splitlines():
        words = line.split()
        if words and words[0].startswith("@"):
            words = words[1:]
        if not words:
            continue
        op = words[0]
        if op.startswith("ld.global"):
            wide_op = ".v4.b32" in op or ".v4.f32" in op or ".v2.b64" in op
        elif op.startswith("cp.async.c") and ".shared.global" in op:
            size = _CP_ASYNC_SIZE.search(line)
            wide_op = size is not None and int(size.group(1), 0) == 16
        else:
            continue
        wide += wide_op
        narrow += not wide_op
    return wide, narrow


def _sass(cubin: bytes) -> str:
    """The cubin's SASS, by the cuobjdump that Triton ships."""
    import subprocess
    import tempfile

    from triton import knobs
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-sass", f.name], capture_output=True,
                              text=True, check=True).stdout


def compile_report(launch: Launch) -> dict:
    """Compile one launch for sm_90a; its resource report (or the error) as a dict."""
    from triton.runtime.cache import get_cache_manager
    from triton.runtime.jit import JITFunction

    module, name = launch.kernel.split(":")
    fn = getattr(importlib.import_module(module), name)
    while not isinstance(fn, JITFunction):  # an @autotune / @heuristics wrapper
        fn = fn.fn
    start = time.perf_counter()
    report = {"kernel": launch.kernel, "key": launch.key}
    try:
        compiled, log = _compile(fn, launch, fresh=False)
        stored = get_cache_manager(compiled.hash).get_file(_REPORT_FILE)
        facts = {}
        if stored is not None:
            with open(stored) as f:
                facts = json.load(f)
        if facts.get("version") != _REPORT_VERSION:
            if "Used" not in log:  # a binary cached before: compile again, so ptxas reports on this one
                compiled, log = _compile(fn, launch, fresh=True)
            facts = _facts(compiled, log)
            get_cache_manager(compiled.hash).put(json.dumps(facts), _REPORT_FILE, binary=False)
    except Exception as exc:  # a failed compile is a result to report, not a crash of the run
        return {**report, "error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
    threads = 32 * launch.options["num_warps"]
    regs = -(-facts["registers"] // 8) * 8  # allocation granularity
    by_regs = SM90_REGISTERS // (regs * threads) if regs else SM90_MAX_BLOCKS
    by_smem = SM90_SHARED_LIMIT // (facts["shared_bytes"] + 1024) if facts["shared_bytes"] else SM90_MAX_BLOCKS
    facts["blocks_per_sm"] = min(by_regs, by_smem, SM90_MAX_BLOCKS, 2048 // threads)
    return {**report, **facts, "seconds": round(time.perf_counter() - start, 2)}


def _compile(fn, launch: Launch, *, fresh: bool):
    """(CompiledKernel, ptxas -v log: empty when Triton's cache had the binary)."""
    import triton
    from triton import knobs
    from triton.compiler import ASTSource

    log = io.StringIO()
    with mock.patch.object(knobs.nvidia, "dump_ptxas_log", True), \
            mock.patch.object(knobs.compilation, "always_compile", fresh), contextlib.redirect_stdout(log):
        compiled = triton.compile(ASTSource(fn, launch.signature, launch.constexprs, launch.attrs),
                                  target=_target(), options=dict(launch.options))
    return compiled, log.getvalue()


def _facts(compiled, log: str) -> dict:
    """ptxas' report of this binary, and what its PTX, TTIR and SASS show."""
    facts = parse_ptxas(log)
    facts["version"] = _REPORT_VERSION
    ptx = compiled.asm["ptx"]
    facts["wgmma"] = int("wgmma.mma_async" in ptx)
    facts["mma"] = int("mma.sync" in ptx)  # Ampere-style tensor-core dot: no wgmma
    facts["shared_bytes"] = int(compiled.metadata.shared)
    facts["dots"], facts["tensor_core_dots"] = count_dots(compiled.asm["ttir"])
    facts["loads_16B"], facts["loads_narrow"] = count_global_loads(ptx)
    sass = _sass(compiled.asm["cubin"])
    facts["hgmma_sass"] = len(re.findall(r"\bHGMMA\.", sass))  # wgmma as the machine code runs it
    facts["local_memory_ops"] = len(re.findall(r"\b(?:LDL|STL)(?:\.|\s)", sass))  # spills / stack arrays
    return facts


def compile_all(launches: list[Launch], workers: int = 2) -> dict[str, dict]:
    """Reports by launch key, each distinct specialisation compiled once (a pool of `workers`)."""
    unique = {}
    for launch in launches:
        unique.setdefault(launch.key, launch)
    if workers <= 1:
        return {key: compile_report(launch) for key, launch in unique.items()}
    ctx = multiprocessing.get_context("fork")
    with futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        done = pool.map(compile_report, unique.values())
        return {key: report for key, report in zip(unique, done)}


# ---------------------------------------------------------------- checks, table, CSV rows

def problems(launch: Launch, report: dict) -> list[str]:
    """What is wrong with one compiled launch (empty when it is fine for the H200)."""
    where = f"{launch.name} [{launch.case}]"
    if "error" in report:
        return [f"{where}: does not compile: {report['error']}"]
    found = []
    if report["spill_store_bytes"] or report["spill_load_bytes"]:
        found.append(f"{where}: spills {report['spill_store_bytes']} B stores / {report['spill_load_bytes']} B loads "
                     f"at {report['registers']} registers")
    if launch.grid[0] >= 2**31 or any(g > 65535 for g in launch.grid[1:]) or min(launch.grid) < 1:
        found.append(f"{where}: grid {launch.grid} outside CUDA's limits (x < 2**31, y and z <= 65535, all >= 1)")
    if report["shared_bytes"] > SM90_SHARED_LIMIT:
        found.append(f"{where}: {report['shared_bytes']} B shared memory > {SM90_SHARED_LIMIT}")
    if report["local_memory_ops"]:
        found.append(f"{where}: {report['local_memory_ops']} local-memory loads/stores (LDL/STL) in the SASS")
    if report["tensor_core_dots"] and not (report["wgmma"] and report["hgmma_sass"]):
        found.append(f"{where}: {report['tensor_core_dots']} dot(s) the tensor cores could run, but no wgmma "
                     f"({'mma.sync' if report['mma'] else 'FMA'} instead)")
    return found


def rows(launches: list[Launch], reports: dict[str, dict], device: str) -> list[dict]:
    """Long-format CSV rows (benchmarks/common.py FIELDS), one set per (case, distinct kernel)."""
    out, seen = [], set()
    for launch in launches:
        report = reports[launch.key]
        if (launch.case, launch.key) in seen or "error" in report:
            continue
        seen.add((launch.case, launch.key))
        label, _, shape = launch.case.partition(" | ")
        op, _, config = label.partition(" ")
        base = dict(what=f"sm90_compile:{op}", provider=launch.name, mode=config, shape=shape,
                    dtype=_dtype_of(launch), device=device)
        for metric, unit in (("registers", "regs/thread"), ("spill_store_bytes", "B"), ("stack_bytes", "B"),
                             ("shared_bytes", "B"), ("wgmma", "bool"), ("hgmma_sass", "instructions"),
                             ("local_memory_ops", "instructions"), ("blocks_per_sm", "blocks"),
                             ("num_warps", "warps"), ("num_stages", "stages")):
            value = launch.options[metric] if metric in ("num_warps", "num_stages") else report[metric]
            out.append({**base, "metric": metric, "median": value, "unit": unit})
    return out


def _dtype_of(launch: Launch) -> str:
    ptrs = [t[1:] for t in launch.signature.values() if isinstance(t, str) and t.startswith("*")]
    return ptrs[0] if ptrs else ""


def table(launches: list[Launch], reports: dict[str, dict]) -> str:
    """Markdown table: one line per distinct compiled kernel, with the cases that launch it."""
    cases: dict[str, list[str]] = {}
    for launch in launches:
        cases.setdefault(launch.key, [])
        if launch.case not in cases[launch.key]:
            cases[launch.key].append(launch.case)
    first = {}
    for launch in launches:
        first.setdefault(launch.key, launch)
    lines = ["| kernel | cases | warps/stages | regs | spill B | smem B | wgmma | blocks/SM |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, launch in first.items():
        r = reports[key]
        label = "; ".join(cases[key][:3]) + (f" (+{len(cases[key]) - 3})" if len(cases[key]) > 3 else "")
        if "error" in r:
            lines.append(f"| {launch.name} | {label} | | ERROR: {r['error'][:80]} | | | | |")
            continue
        lines.append(f"| {launch.name} | {label} | {launch.options['num_warps']}/{launch.options['num_stages']} | "
                     f"{r['registers']} | {r['spill_store_bytes']} | {r['shared_bytes']} | {r['wgmma']} | "
                     f"{r['blocks_per_sm']} |")
    return "\n".join(lines)


def ptxas_version() -> str:
    from triton.backends.nvidia.compiler import get_ptxas_version
    found = re.search(r"release (\d+\.\d+)", get_ptxas_version(90))
    return found.group(1) if found else "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the launches, reports and problems as JSON here")
    parser.add_argument("--no-csv", action="store_true", help="do not append rows to results/sm90_compile.csv")
    parser.add_argument("--workers", type=int, default=2, help="compile processes (default 2)")
    parser.add_argument("--only", default="", help="run only the cases whose label contains this text")
    args = parser.parse_args(argv)

    from benchmarks import sm90_cases
    start = time.perf_counter()
    launches, found = sm90_cases.record_all(args.only)
    reports = compile_all(launches, args.workers)
    for launch in launches:
        found += [p for p in problems(launch, reports[launch.key]) if p not in found]
    print(table(launches, reports))
    print(f"{len(launches)} launches, {len(reports)} distinct kernels compiled for sm_90a "
          f"in {time.perf_counter() - start:.1f} s; {len(found)} problems")
    for p in found:
        print("PROBLEM:", p)
    if args.json:
        summary = [{"case": l.case, "kernel": l.kernel, "key": l.key, "grid": l.grid, "options": l.options}
                   for l in launches]
        with open(args.json, "w") as f:
            json.dump({"launches": summary, "reports": reports, "problems": found}, f, default=str)
    if not args.no_csv:
        from benchmarks.common import append_rows
        device = f"sm_90a AOT (ptxas {ptxas_version()})"
        path = append_rows("sm90_compile.csv", rows(launches, reports, device))
        print(f"rows appended to {path}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
