"""fused_linear_logprobs against an independent float64 matmul + log_softmax + gather."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import HAS_CUDA, TOLERANCES, triton_available
from tempo_fast.ops.fused_linear_logprobs import fused_linear_logprobs

# (rows, H, V): awkward sizes, V not a multiple of any tile
SHAPES = [(1, 16, 32001), (7, 33, 33), (769, 64, 4099), (4097, 24, 1), (4097, 8, 33)]
INTERP_SHAPES = [(1, 16, 1), (7, 33, 33), (64, 48, 4099)]  # Triton interpreter: small


def ref64(hidden, weight, bias, ids, temperature):
    """float64 logits, log_softmax, gather; shares no code with the op."""
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return torch.gather(logp, -1, ids.long().clamp(min=0)[..., None])[..., 0] * (ids >= 0)


def torch_lowp(hidden, weight, bias, ids, temperature):
    """Plain torch in the inputs' own precision: the error budget for low-precision inputs."""
    logits = hidden @ weight.T + (0 if bias is None else bias)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return torch.gather(logp, -1, ids.long().clamp(min=0)[..., None])[..., 0] * (ids >= 0)


def make(rows, hdim, vocab, dtype, seed=0, device="cpu", bias=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, hdim, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, hdim, generator=g, dtype=torch.float64) * (2.0 / hdim ** 0.5)
    b = torch.randn(vocab, generator=g, dtype=torch.float64) if bias else None
    ids = torch.randint(0, vocab, (rows,), generator=g)
    ids[::6] = -100
    cast = lambda t: None if t is None else t.to(dtype).to(device)  # noqa: E731
    return cast(hidden), cast(weight), cast(b), ids.to(device)


def check_against_ref(hidden, weight, bias, ids, temperature, backend):
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight) + ((bias,) if bias is not None else ())]
    out = fused_linear_logprobs(leaves[0], leaves[1], ids, bias=leaves[2] if bias is not None else None,
                                temperature=temperature, backend=backend)
    assert out.dtype == torch.float32 and out.shape == ids.shape
    grad_out = torch.randn(ids.shape, dtype=torch.float64, device=ids.device)
    out.backward(grad_out.float())

    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    expected = ref64(leaves64[0], leaves64[1], leaves64[2] if bias is not None else None, ids, temperature)
    expected.backward(grad_out)
    # accepted: at most twice plain torch's own error in the same precision, plus a small floor
    tol = TOLERANCES[torch.float32]["atol"]
    lowp = [t.detach().clone().requires_grad_() for t in leaves]
    base = torch_lowp(lowp[0], lowp[1], lowp[2] if bias is not None else None, ids, temperature)
    base.backward(grad_out.to(hidden.dtype))
    budgets = [2 * (base.double() - expected).abs().max().item() + tol]
    budgets += [2 * (lo.grad.double() - e.grad).abs().max().item() + tol for lo, e in zip(lowp, leaves64)]
    names = ["forward", "grad hidden", "grad weight", "grad bias"]
    errors = [(out.double() - expected).abs().max().item()]
    errors += [(t.grad.double() - e.grad).abs().max().item() for t, e in zip(leaves, leaves64)]
    for name, err, budget in zip(names, errors, budgets):
        assert err <= budget, f"{name} error {err:.3g} > {budget:.3g}"
    for t in leaves:
        assert t.grad.dtype == t.dtype
    pad = ids < 0
    assert torch.all(out[pad] == 0)
    assert torch.all(leaves[0].grad[pad] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,hdim,vocab", SHAPES)
def test_torch_backend_matches_float64(rows, hdim, vocab, dtype):
    hidden, weight, bias, ids = make(rows, hdim, vocab, dtype, bias=vocab % 2 == 1)
    check_against_ref(hidden, weight, bias, ids, 1.0 if dtype == torch.float32 else 0.7, "torch")


def test_leading_dims_non_contiguous_and_temperature():
    hidden, weight, bias, ids = make(30, 40, 517, torch.float32, seed=1)
    check_against_ref(hidden.view(3, 10, 40)[:, 1:, ::2], weight[:, ::2], bias, ids.view(3, 10)[:, 1:], 1.7, "torch")


def test_rows_are_batch_invariant_torch():
    hidden, weight, bias, ids = make(100, 64, 4099, torch.bfloat16, seed=2)
    full = fused_linear_logprobs(hidden, weight, ids, bias=bias, backend="torch")
    for i in (0, 31, 32, 99):
        assert torch.equal(fused_linear_logprobs(hidden[i:i + 1], weight, ids[i:i + 1], bias=bias, backend="torch")[0], full[i])
    assert torch.equal(fused_linear_logprobs(hidden[3:40], weight, ids[3:40], bias=bias, backend="torch"), full[3:40])


def test_errors_name_the_bad_value():
    hidden, weight, bias, ids = make(4, 8, 10, torch.float32)
    with pytest.raises(TypeError, match="weight must have hidden's dtype"):
        fused_linear_logprobs(hidden, weight.half(), ids)
    with pytest.raises(ValueError, match=r"one H .*\(4, 8\).*\(10, 9\)"):
        fused_linear_logprobs(hidden, torch.zeros(10, 9), ids)
    with pytest.raises(ValueError, match=r"bias must be \[V\] = \[10\], got \(11,\)"):
        fused_linear_logprobs(hidden, weight, ids, bias=torch.zeros(11))
    with pytest.raises(ValueError, match="weight must have 2 dims"):
        fused_linear_logprobs(hidden, weight[None], ids)
    with pytest.raises(ValueError, match="ids must have the shape"):
        fused_linear_logprobs(hidden, weight, ids[:3])
    with pytest.raises(ValueError, match="< vocabulary size 10.*got id 12"):
        fused_linear_logprobs(hidden, weight, torch.tensor([0, 12, 1, 2]), backend="torch")
    with pytest.raises(TypeError, match="hidden must be one of"):
        fused_linear_logprobs(hidden.double(), weight.double(), ids)


MEMORY_SCRIPT = textwrap.dedent("""
    import torch
    from tempo_fast.ops import fused_linear_logprobs
    torch.manual_seed(0)
    n, h, v = 2048, 128, 131072
    hidden = torch.randn(n, h, requires_grad=True)
    weight = (torch.randn(v, h) * 0.05).requires_grad_()
    ids = torch.randint(0, v, (n,))

    def status_kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    # Reset the process's peak resident set (VmHWM) to the current one, so that what imports and
    # setup touched before this point does not count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kib("VmRSS")
    out = fused_linear_logprobs(hidden, weight, ids, backend="torch")
    out.sum().backward()
    grads_kib = (weight.grad.numel() + hidden.grad.numel()) * 4 / 1024
    print((status_kib("VmHWM") - before - grads_kib) / 1024)
""")


def test_memory_does_not_grow_with_rows_times_vocab():
    """Logits alone would be 1 GiB; forward + backward may add well under 400 MB (grads excluded)."""
    # A fixed mmap threshold makes glibc hand every large buffer straight back to the OS when it is
    # freed, so the resident set measures what the op holds rather than the allocator's caching.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    extra_mb = float(run.stdout.strip().splitlines()[-1])
    assert extra_mb < 250, f"peak memory rose by {extra_mb:.0f} MB beyond inputs and gradients"


@pytest.mark.skipif(not triton_available(), reason="triton not installed")
@pytest.mark.parametrize("rows,hdim,vocab", INTERP_SHAPES)
def test_triton_matches_float64(rows, hdim, vocab):
    # fp32 only under the interpreter: its bf16 tl.dot is wrong
    device = "cuda" if HAS_CUDA else "cpu"
    hidden, weight, bias, ids = make(rows, hdim, vocab, torch.float32, device=device, bias=vocab > 1)
    check_against_ref(hidden, weight, bias, ids, 0.8, "triton")


@pytest.mark.skipif(not triton_available(), reason="triton not installed")
def test_triton_strided_batch_invariant_and_bad_ids():
    device = "cuda" if HAS_CUDA else "cpu"
    hidden, weight, bias, ids = make(40, 64, 4099, torch.float32, seed=4, device=device, bias=False)
    check_against_ref(hidden[:, ::2], weight[:, ::2], None, ids, 1.0, "triton")
    full = fused_linear_logprobs(hidden, weight, ids, backend="triton")
    for i in (0, 39):
        assert torch.equal(fused_linear_logprobs(hidden[i:i + 1], weight, ids[i:i + 1], backend="triton")[0], full[i])
    # documented: ids >= V are not checked on Triton (no device sync) and give NaN
    out = fused_linear_logprobs(hidden[:2], weight, torch.tensor([4099, 5], device=device), backend="triton")
    assert torch.isnan(out[0]) and torch.isfinite(out[1])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,hdim,vocab", SHAPES)
def test_triton_cuda_matches_float64_and_is_batch_invariant(rows, hdim, vocab, dtype):
    hidden, weight, bias, ids = make(rows, hdim, vocab, dtype, device="cuda")
    check_against_ref(hidden, weight, bias, ids, 0.7, "triton")
    full = fused_linear_logprobs(hidden, weight, ids, bias=bias)
    assert torch.equal(fused_linear_logprobs(hidden[-1:], weight, ids[-1:], bias=bias)[0], full[-1])
