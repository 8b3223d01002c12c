"""What every benchmark shares: timing, peak memory, the machine's memory bandwidth, and the
long-format CSV rows in benchmarks/results/.

Timing: `triton.testing.do_bench` on CUDA (it flushes L2 and reports the median in ms), a
repeated median with warm-up on CPU. Peak memory: `torch.cuda.max_memory_allocated` above the
pre-call level on CUDA; on CPU (Linux), the high-water resident set above its level before the call,
with freed buffers returned to the OS so that reused memory is counted (torch's CPU allocator keeps
no counters).
"""
from __future__ import annotations

import csv
import ctypes
import datetime as _dt
import functools
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["what", "provider", "mode", "shape", "dtype", "metric", "median", "unit",
          "device", "versions", "git_sha", "date"]


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{platform.processor() or platform.machine()}x{os.cpu_count()}"


def versions() -> str:
    """Installed versions of torch and the providers' packages (missing ones are left out)."""
    from importlib import metadata

    parts = []
    for name in ("torch", "triton", "numba", "liger-kernel", "trl", "transformers", "torchcodec", "cut-cross-entropy"):
        try:
            parts.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return " ".join(parts)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: torch.device | str, *, warmup: int = 2, reps: int = 7) -> float:
    """Median wall time of fn() in milliseconds."""
    if torch.device(device).type == "cuda":
        import triton.testing
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_memory_bytes(fn, device: torch.device | str) -> int:
    """Peak memory fn() allocates above what was allocated before the call."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return _cpu_peak_bytes(fn)


@functools.cache
def _libc():
    return ctypes.CDLL("libc.so.6")


def _unmap_freed_buffers() -> None:
    """Make glibc hand buffers back to the OS when they are freed (a fixed 1 MiB mmap threshold)
    and release the free pages it already holds, so each tensor the call makes is fresh memory that
    the resident set counts."""
    _libc().mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    _libc().malloc_trim(0)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cpu_peak_bytes(fn) -> int:
    """CPU peak: the process's high-water resident set (VmHWM), reset to the current resident set
    just before the call (Linux: writing 5 to /proc/self/clear_refs), minus that level. Freed
    buffers are returned to the OS (see _unmap_freed_buffers), so reused memory still counts.
    Numbers in rows: MiB above the inputs, including outputs and gradients."""
    _unmap_freed_buffers()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    fn()
    return max(0, _status_kib("VmHWM") - base) * 1024


def rss_growth_bytes(fn, *, first_call: bool = False) -> tuple[int, bool]:
    """CPU peak for a process that runs one provider (see bench_grpo_loss's child mode).

    first_call=True: ru_maxrss after fn() minus the resident set before it, with nothing reset:
    meant for the process's first call (it then includes one-time costs: code pages, JIT). Valid
    when fn() raised the high-water mark; the flag returned says whether it did (else the figure
    is an upper bound). first_call=False: the high-water mark (VmHWM) is reset first (Linux
    clear_refs) and its growth over fn() returned, flag True. (ru_maxrss keeps the old mark once
    any thread of the process has exited, so it cannot be reset.) Freed buffers are handed back
    to the OS before either."""
    import gc
    import resource

    gc.collect()
    _unmap_freed_buffers()
    if not first_call:
        return _cpu_peak_bytes(fn), True
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    base = _status_kib("VmRSS")
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0, after - base) * 1024, after > before


def gemm_tflops(device: torch.device | str, dtype: torch.dtype, n: int) -> float:
    """Measured rate (TFLOP/s) of one n x n x n matmul in dtype on device right now."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty_like(a)
    ms = time_ms(lambda: torch.mm(a, b, out=out), device)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def memory_bandwidth_gbs(device: torch.device | str, nbytes: int = 1 << 28) -> float:
    """Measured copy bandwidth (read + write bytes per second, GB/s) of this device right now."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def append_rows(csv_name: str, rows: list[dict]) -> Path:
    """Append long-format rows to benchmarks/results/<csv_name>, filling the common columns."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / csv_name
    stamp = {"versions": versions(), "git_sha": git_sha(),
             "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({**stamp, **row})
    return path


def print_table(rows: list[dict], columns=("what", "provider", "mode", "shape", "dtype", "metric", "median", "unit")) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns} if rows else {}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
