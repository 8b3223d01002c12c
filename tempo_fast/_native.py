"""The optional native extension `tempo_fast._C`: whether it is there, why not, and loading it.

The extension is built from kernels/ by CMakeLists.txt when the package is installed (setup.py,
TEMPO_FAST_NATIVE=0|1|auto); its ops are called as `torch.ops.tempo_fast.<op>(...)`. Nothing
imports it at package import time: the first `available()`, `load()` or `has_op()` tries
`import tempo_fast._C` once and remembers the outcome.

    available() -> bool          the extension imports
    reason() -> str              why not ("" when it does): not built, built with
                                 TEMPO_FAST_NATIVE=0, the build failed, or the import error
    load() -> module             the module, or RuntimeError with the reason and how to build it
    has_op(name) -> bool         torch.ops.tempo_fast.<name> exists
    has_kernel(name, device)     ... and has a kernel for that device type ("cpu", "cuda")
    cpu_isa(requested=None) -> int   the SIMD level to pass to CPU ops (see below)

`python -m tempo_fast._native` prints the state. CPU ops take an `isa` argument: -1 is the
best this CPU has; TEMPO_FAST_CPU_ISA=scalar|avx2|avx512bw (read on every call) forces a level,
for tests and benchmarks.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
from pathlib import Path

MODULE = "tempo_fast._C"
BUILD_RECORD = Path(__file__).with_name("_native_build.json")
HOW_TO_BUILD = ("build it with `TEMPO_FAST_NATIVE=1 pip install -v -e .` from the repository (needs torch "
                "installed first, cmake and a C++ compiler; the CUDA part also needs nvcc), which fails "
                "loudly with the compiler's error")
ISA_LEVELS = {"auto": -1, "scalar": 0, "avx2": 1, "avx512bw": 2}


def build_record() -> dict | None:
    """What setup.py's native build did (`_native_build.json` beside this file), if it ran."""
    try:
        return json.loads(BUILD_RECORD.read_text())
    except (OSError, ValueError):
        return None


@functools.cache
def _state() -> tuple[object | None, str]:
    record = build_record()
    try:
        import torch  # noqa: F401  (loads libtorch, which the extension links to)
        module = importlib.import_module(MODULE)
    except (ImportError, OSError) as err:
        if record is not None and not record.get("built"):
            return None, f"tempo_fast._C was not built: {record.get('reason') or 'no reason recorded'}"
        if record is None:
            return None, ("tempo_fast._C was not built (no build record: the package was not installed "
                          f"through its setup.py); importing it said: {err}")
        return None, f"tempo_fast._C was built (torch {record.get('torch')}) but does not import: {err}"
    return module, ""


def available() -> bool:
    return _state()[0] is not None


def reason() -> str:
    return _state()[1]


def load():
    module, why = _state()
    if module is None:
        raise RuntimeError(f"{why}; {HOW_TO_BUILD}")
    return module


def has_op(name: str) -> bool:
    if not available():
        return False
    import torch
    return hasattr(torch.ops.tempo_fast, name)


def has_kernel(name: str, device: str) -> bool:
    """torch.ops.tempo_fast.<name> has a kernel for tensors of this device type."""
    if not has_op(name):
        return False
    import torch
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device, device)
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"tempo_fast::{name}", key)


def cpu_isa(requested: str | None = None) -> int:
    """The `isa` argument of CPU ops: `requested`, else TEMPO_FAST_CPU_ISA, else -1 (auto)."""
    name = (requested or os.environ.get("TEMPO_FAST_CPU_ISA") or "auto").strip().lower()
    if name not in ISA_LEVELS:
        raise ValueError(f"SIMD level must be one of {sorted(ISA_LEVELS)}, got {name!r} "
                         "(argument or TEMPO_FAST_CPU_ISA)")
    return ISA_LEVELS[name]


def info() -> dict:
    """The state of the extension, for `python -m tempo_fast._native` and benchmark rows."""
    state = dict(available=available(), reason=reason(), build=build_record())
    if state["available"]:
        import torch
        state["cpu_isa"] = torch.ops.tempo_fast.cpu_isa()
        state["cuda"] = torch.ops.tempo_fast.built_with_cuda()
    return state


if __name__ == "__main__":
    print(json.dumps(info(), indent=1))
