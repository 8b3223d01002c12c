"""Test setup: Triton runs in its interpreter on machines without CUDA, GPU tests skip cleanly.

TRITON_INTERPRET must be set before triton is first imported; tempo_fast imports triton lazily,
so setting it here (before any test module runs a kernel) is enough.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per xdist worker: two workers sharing two cores with two threads
    # each made small CPU ops up to 100x slower through oversubscription.
    torch.set_num_threads(1)
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

# Absolute/relative tolerances for comparing an op run in `dtype` against a float64 reference.
TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
}


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data():
    path = os.path.abspath(DATA)
    if not os.path.isdir(path):
        pytest.skip(f"shared annotation data not found at {path}")
    return path
