"""group_advantages against a float64 per-group reference written here, on every backend."""
import math

import pytest
import torch

from conftest import TOLERANCES, numba_available, triton_available
from tempo_fast.ops import group_advantages

# (number of groups, group size): N of 1, 7, 769, 4097 and group sizes 1, 2, 3, 8, 16, plus a
# group longer than the Triton kernel's 1024-reward chunk.
SHAPES = [(1, 1), (7, 1), (769, 1), (4097, 1), (1, 7), (1, 16), (7, 3), (384, 2), (96, 8), (256, 16),
          (3, 2500)]
SMALL_SHAPES = [(1, 1), (7, 1), (1, 7), (7, 3), (96, 8), (48, 16), (2, 1500)]
SCALES = ["group", "batch", "none"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def backends():
    out = ["torch"]
    if numba_available():
        out.append("numba")
    if triton_available():
        out.append("triton")
    return out


def reference(rewards, group_size, scale, eps=1e-4):
    """Float64, one group at a time, from the contract's words."""
    values = [float(v) for v in rewards.double()]
    finite = [v for v in values if not math.isnan(v)]
    batch_std = 0.0
    if len(finite) >= 2:
        mu = sum(finite) / len(finite)
        batch_std = math.sqrt(sum((v - mu) ** 2 for v in finite) / (len(finite) - 1))
    out = []
    for g in range(0, len(values), group_size):
        group = values[g:g + group_size]
        kept = [v for v in group if not math.isnan(v)]
        if len(kept) < 2:
            out.extend([0.0] * len(group))
            continue
        mu = sum(kept) / len(kept)
        std = math.sqrt(sum((v - mu) ** 2 for v in kept) / (len(kept) - 1))
        denom = {"group": std + eps, "batch": batch_std + eps, "none": 1.0}[scale]
        out.extend(0.0 if math.isnan(v) else (v - mu) / denom for v in group)
    return torch.tensor(out, dtype=torch.float64)


def make_rewards(n, seed, dtype=torch.float32, nan_fraction=0.0):
    # Rewards on a 1/16 grid (as IoU-like rewards rounded for logging): exact in every dtype and
    # never so close that fp32 rounding of (r - mean) is amplified by a tiny std.
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 33, (n,), generator=gen).double() / 16
    if nan_fraction:
        r[torch.rand(n, generator=gen) < nan_fraction] = float("nan")
    return r.to(dtype)


def assert_matches(out, expected):
    assert out.dtype == torch.float32
    assert out.shape == expected.shape
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, scale, backend):
    if backend == "triton" and shape not in SMALL_SHAPES:
        pytest.skip("interpreter: small shapes only")
    groups, size = shape
    r = make_rewards(groups * size, seed=groups * 31 + size, nan_fraction=0.1)
    assert_matches(group_advantages(r, size, scale=scale, backend=backend), reference(r, size, scale))


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_continuous_rewards(dtype, backend):
    gen = torch.Generator().manual_seed(7)
    # Continuous rewards with a healthy spread in every group of 8.
    r = (torch.rand(96, generator=gen, dtype=torch.float64) + torch.arange(8).repeat(12) * 0.25).to(dtype)
    for scale in SCALES:
        assert_matches(group_advantages(r, 8, scale=scale, backend=backend), reference(r, 8, scale))


@pytest.mark.parametrize("backend", backends())
def test_non_contiguous_view(backend):
    base = make_rewards(2 * 7 * 8, seed=3, nan_fraction=0.1)
    r = base[::2]
    assert not r.is_contiguous()
    for scale in SCALES:
        assert_matches(group_advantages(r, 8, scale=scale, backend=backend), reference(r, 8, scale))


@pytest.mark.parametrize("backend", backends())
def test_nan_rules(backend):
    nan = float("nan")
    r = torch.tensor([1.0, nan, 3.0, 5.0,  # NaN left out: stats of {1, 3, 5}
                      nan, nan, nan, nan,  # all NaN
                      nan, 2.0, nan, nan,  # one finite reward
                      4.0, 4.0, 4.0, 4.0])  # no spread
    out = group_advantages(r, 4, backend=backend)
    assert torch.isfinite(out).all()
    expected = torch.tensor([-2 / (2 + 1e-4), 0, 0, 2 / (2 + 1e-4)] + [0.0] * 12, dtype=torch.float64)
    assert_matches(out, expected)
    assert_matches(group_advantages(r, 1, backend=backend), torch.zeros(16, dtype=torch.float64))


@pytest.mark.parametrize("backend", backends())
def test_batch_std_leaves_nan_out(backend):
    nan = float("nan")
    r = torch.tensor([0.0, 1.0, nan, 2.0, 3.0, nan])
    std = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64).std().item()
    expected = torch.tensor([-0.5, 0.5, 0.0, -0.5, 0.5, 0.0], dtype=torch.float64) / (std + 1e-4)
    assert_matches(group_advantages(r, 3, scale="batch", backend=backend), expected)


@pytest.mark.parametrize("backend", [b for b in backends() if b != "triton"])
def test_many_groups(backend):
    # 70,000 groups: more than a 65,535-wide grid dimension could address one per program.
    r = make_rewards(70_000 * 2, seed=11, nan_fraction=0.05)
    out = group_advantages(r, 2, backend=backend)
    assert_matches(out, reference(r, 2, "group"))


@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_many_groups_triton():
    # 70,000 groups of 2 in 69 programs of 1024 groups: quick even in the interpreter.
    r = make_rewards(70_000 * 2, seed=12, nan_fraction=0.05)
    assert_matches(group_advantages(r, 2, backend="triton"), reference(r, 2, "group"))


def test_default_backend_and_result_flags():
    r = make_rewards(64, seed=5).requires_grad_()
    out = group_advantages(r, 8)
    assert not out.requires_grad
    assert_matches(out, reference(r.detach(), 8, "group"))
    assert group_advantages(torch.empty(0), 4).shape == (0,)


@pytest.mark.parametrize("args, kwargs, error, words", [
    ((torch.zeros(10), 4), {}, ValueError, "not a multiple of group_size=4"),
    ((torch.zeros(8), 0), {}, ValueError, "group_size must be a positive int, got 0"),
    ((torch.zeros(8), 2.0), {}, ValueError, "group_size must be a positive int, got 2.0"),
    ((torch.zeros(2, 4), 4), {}, ValueError, "rewards must have 1 dims, got shape (2, 4)"),
    ((torch.zeros(8, dtype=torch.int64), 4), {}, TypeError, "got int64"),
    (([0.0, 1.0], 2), {}, TypeError, "must be a torch.Tensor, got list"),
    ((torch.zeros(8), 4), {"scale": "std"}, ValueError, "scale must be one of"),
    ((torch.zeros(8), 4), {"eps": -1.0}, ValueError, "eps must be a non-negative number, got -1.0"),
    ((torch.zeros(8), 4), {"backend": "cuda"}, ValueError, "backend must be one of"),
])
def test_errors(args, kwargs, error, words):
    with pytest.raises(error) as info:
        group_advantages(*args, **kwargs)
    assert words in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize("scale", SCALES)
def test_cuda_many_groups(scale):
    r = make_rewards(1_000_003 * 3, seed=13, nan_fraction=0.05)
    out = group_advantages(r.cuda(), 3, scale=scale)
    expected = group_advantages(r, 3, scale=scale, backend="torch").double()
    torch.testing.assert_close(out.cpu().double(), expected, **TOLERANCES[torch.float32])
