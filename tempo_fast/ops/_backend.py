"""Backend choice and input checks shared by every op in `tempo_fast.ops`.

Each op has up to four implementations: the torch reference (always there), a Triton kernel
(CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 runs Triton's interpreter), a numba
kernel (CPU tensors) and a native one (`torch.ops.tempo_fast.<op>` from the optional extension
tempo_fast._C, built from kernels/). `resolve_backend` turns the user's `backend=` argument into
one of them, and fails with a message that says why when the asked-for one cannot run on the
given tensor.

Nothing here imports triton, numba or the extension: availability is checked with
`importlib.util.find_spec`, the kernel modules (`_triton/*.py`, `_numba/*.py`) are imported only
when first used, and tempo_fast._native tries the extension on the first op that could use it.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

from .. import _native

BACKENDS = ("torch", "triton", "numba", "native")


@functools.cache
def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def has_numba() -> bool:
    return importlib.util.find_spec("numba") is not None


def triton_interpreting() -> bool:
    """True when Triton kernels run in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(op: str, tensor: torch.Tensor, backend: str | None, *, numba: bool = True,
                    native: str | None = None, native_default: tuple[str, ...] = ()) -> str:
    """The implementation that runs `op` on `tensor`.

    native: the op's kernel in the extension (`torch.ops.tempo_fast.<native>`), None if it has
    none; native_default: the device types on which it was measured fastest.
    backend=None picks the fastest one available: native where `native_default` lists the
    tensor's device type and the extension has that kernel, else Triton for CUDA tensors, numba
    for CPU tensors when the op has a numba kernel (`numba=True`) and numba is installed, else
    torch.
    """
    on_cpu = tensor.device.type == "cpu"
    if backend is None:
        if native and tensor.device.type in native_default and _native.has_kernel(native, tensor.device.type):
            return "native"
        if tensor.is_cuda and has_triton():
            return "triton"
        if on_cpu and numba and has_numba():
            return "numba"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "triton":
        if not has_triton():
            raise RuntimeError(f"{op}: backend='triton' needs the triton package (pip install triton)")
        if not tensor.is_cuda and not triton_interpreting():
            raise ValueError(
                f"{op}: backend='triton' got a tensor on {tensor.device}; Triton runs CUDA tensors, "
                "or CPU tensors in its interpreter when TRITON_INTERPRET=1 is set before triton is imported"
            )
    if backend == "numba":
        if not numba:
            raise ValueError(f"{op}: has no numba kernel (on CPU the torch implementation is faster); use backend='torch'")
        if not on_cpu:
            raise ValueError(f"{op}: backend='numba' runs CPU tensors only, got a tensor on {tensor.device}")
        if not has_numba():
            raise RuntimeError(f"{op}: backend='numba' needs the numba package (pip install numba)")
    if backend == "native":
        check_native(op, native, tensor.device.type)
    return backend


def check_native(op: str, native: str | None, device: str) -> None:
    """Raise, saying why, unless the extension's kernel `native` runs tensors of type `device`."""
    if native is None:
        raise ValueError(f"{op}: has no native kernel; use backend=None or one of {BACKENDS[:3]}")
    if not _native.available():
        raise RuntimeError(f"{op}: backend='native' needs the extension tempo_fast._C, which is not "
                           f"available: {_native.reason()}; {_native.HOW_TO_BUILD}")
    if not _native.has_op(native):
        raise RuntimeError(f"{op}: the extension tempo_fast._C has no op {native!r} (built from older "
                           f"sources?); {_native.HOW_TO_BUILD}")
    if not _native.has_kernel(native, device):
        part = ("was built without its CUDA part (it is built where torch has CUDA and nvcc is found)"
                if device == "cuda" else f"has no {device} kernel for it")
        raise ValueError(f"{op}: backend='native' got a tensor on {device}, and tempo_fast._C {part}")


def check_tensor(op: str, name: str, t, *, ndim: int | tuple[int, ...] | None = None,
                 dtypes: tuple[torch.dtype, ...] | None = None) -> torch.Tensor:
    """Validate one tensor argument: type, rank and dtype, with a message naming `op` and `name`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in ranks:
            raise ValueError(f"{op}: {name} must have {' or '.join(map(str, ranks))} dims, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{op}: {name} must be one of {names}, got {str(t.dtype).removeprefix('torch.')}")
    return t


def check_same_device(op: str, **tensors) -> None:
    """All given tensors (None allowed) live on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"{op}: tensors must be on one device, got {listing}")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
