"""Every Triton launch of the public ops compiles for the H200 (sm_90a) without spills.

benchmarks/sm90_compile.py records the launches the ops make at the benchmark shapes and at
awkward ones (benchmarks/sm90_cases.py), compiles each distinct specialisation ahead of time with
Triton's ptxas and reads its resource report. It runs in a subprocess: the tests run Triton in
its interpreter (TRITON_INTERPRET=1), where kernels are not compiled. The Triton cache keeps the
binaries and reports, so a second run only re-records (10-35 s; a cold cache compiles ~75
kernels, about a minute of CPU, minutes on a loaded machine).
"""
import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sm90_compile import SM90_SHARED_LIMIT, count_dots, count_global_loads, parse_ptxas

ROOT = Path(__file__).resolve().parent.parent


def _has_sm90_toolchain() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return Path(get_ptxas(90).path).exists()
    except Exception:  # no triton, or no NVIDIA backend in it
        return False


needs_toolchain = pytest.mark.skipif(not _has_sm90_toolchain(), reason="needs triton with its NVIDIA backend and ptxas")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("sm90") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated to silence its warning
    done = subprocess.run([sys.executable, "-m", "benchmarks.sm90_compile", "--no-csv", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if not out.exists():
        pytest.fail(f"sm90_compile wrote no report (exit {done.returncode}):\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


@needs_toolchain
def test_every_launch_compiles_without_spills_within_shared_memory(compiled):
    reports = compiled["reports"]
    assert len(reports) > 20, "expected dozens of distinct kernel specialisations"
    errors = {k: r["error"] for k, r in reports.items() if "error" in r}
    assert not errors, f"kernels that do not compile for sm_90a: {errors}"
    for launch in compiled["launches"]:
        report = reports[launch["key"]]
        where = f"{launch['kernel']} [{launch['case']}]"
        assert report["spill_store_bytes"] == 0 and report["spill_load_bytes"] == 0, \
            f"{where} spills at {report['registers']} registers"
        assert report["shared_bytes"] <= SM90_SHARED_LIMIT, f"{where} needs {report['shared_bytes']} B shared"
        assert report["registers"] <= 255 and report["blocks_per_sm"] >= 1, where
        assert report["local_memory_ops"] == 0, f"{where}: local-memory loads/stores in the SASS"
        if report["tensor_core_dots"]:
            assert report["wgmma"], f"{where}: a dot the tensor cores could run compiled without wgmma"
    assert compiled["problems"] == []


@needs_toolchain
def test_dot_kernels_use_wgmma_except_ieee_fp32(compiled):
    keys = {}  # case label -> distinct kernels it launches
    for launch in compiled["launches"]:
        keys.setdefault(launch["case"].split(" | ")[0], set()).add(launch["key"])
    by_case = {case: [compiled["reports"][k] for k in found] for case, found in keys.items()}
    for precision in ("bf16", "fp16", "fp32-tf32"):
        dots = [r for r in by_case[f"fused_linear_logprobs {precision}"] if r["dots"]]
        assert len(dots) == 2 and all(r["wgmma"] and r["tensor_core_dots"] == r["dots"] for r in dots), precision
        assert all(r["hgmma_sass"] > 0 for r in dots), f"{precision}: no HGMMA in the SASS"
    ieee = [r for r in by_case["fused_linear_logprobs fp32-ieee"] if r["dots"]]
    assert len(ieee) == 2 and all(r["tensor_core_dots"] == 0 and not r["wgmma"] and not r["hgmma_sass"] for r in ieee)


@needs_toolchain
def test_memory_bound_kernels_load_16_bytes_per_access(compiled):
    for launch in compiled["launches"]:
        if launch["case"].startswith(("selective_logprobs bf16 | ", "saa_scores contiguous")):
            report = compiled["reports"][launch["key"]]
            assert report["loads_16B"] > 0, f"{launch['kernel']} [{launch['case']}] has no 16-byte loads"


@needs_toolchain
def test_every_triton_kernel_is_covered(compiled):
    """A kernel added to tempo_fast/ops/_triton without a case that launches it fails here."""
    import tempo_fast.ops._triton as package

    defined = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        defined |= {f"{module.__name__}:{name}" for name in vars(module) if name.endswith("_kernel")}
    launched = {launch["kernel"] for launch in compiled["launches"]}
    assert defined, "found no *_kernel in tempo_fast.ops._triton"
    assert defined <= launched, f"kernels no case launches: {sorted(defined - launched)}"


def test_ptxas_log_parsing():
    log = ("ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
           "ptxas info    : Function properties for k\n"
           "    48 bytes stack frame, 48 bytes spill stores, 44 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 404 bytes cmem[0]\n")
    assert parse_ptxas(log) == dict(registers=255, stack_bytes=48, spill_store_bytes=48, spill_load_bytes=44)
    with pytest.raises(ValueError, match="Used"):
        parse_ptxas("ptxas info    : 0 bytes gmem\n")


def test_dot_and_load_counting():
    out = " -> tensor<64x128xf32>\n"
    ttir = ("%a = tt.dot %h, %w, %acc, inputPrecision = tf32 : tensor<64x32xf32> * tensor<32x128xf32>" + out
            + "%b = tt.dot %h, %w, %acc : tensor<64x32xf32> * tensor<32x128xf32>" + out
            + "%c = tt.dot %h, %w, %acc : tensor<64x64xbf16> * tensor<64x128xbf16>" + out)
    assert count_dots(ttir) == (3, 2)
    ptx = ("\t@%p3 ld.global.v4.b32 { %r25, %r26, %r27, %r28 }, [ %rd17 + 0 ];\n"
           "\tld.global.b64 { %rd5 }, [ %rd6 + 0 ];\n"
           "\t@%p1 cp.async.cg.shared.global [ %r5 + 0 ], [ %rd4 + 0 ], 0x10, %r6;\n"
           "\tcp.async.ca.shared.global [ %r5 + 0 ], [ %rd4 + 0 ], 4;\n")
    assert count_global_loads(ptx) == (2, 2)
