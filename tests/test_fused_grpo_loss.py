"""fused_grpo_loss against a float64 reference written here: full logits, log_softmax, gather,
TRL's clipped-ratio loss with k3 KL and its four normalisations; loss and gradients of hidden,
weight and bias, every loss type and IS level, on the torch, numba and (interpreted) Triton paths."""
import pytest
import torch
from conftest import HAS_CUDA, numba_available, triton_available

from tempo_fast.ops import fused_grpo_loss

# (B, T, H, V): one token, a ragged batch, a vocabulary not a multiple of any block
SHAPES = [(1, 1, 8, 11), (3, 7, 16, 97), (5, 13, 24, 4099)]
LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]


def reference(hidden, weight, bias, ids, old, adv, mask, ref, *, beta, loss_type, eps_low, eps_high, delta,
              level, temperature, max_len, num_items):
    logits = (hidden @ weight.T + (0 if bias is None else bias)) / temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids.clamp(0, logits.shape[-1] - 1)[..., None])[..., 0]
    old = logps.detach() if old is None else old
    log_ratio = logps - old
    if level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1))[:, None]
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    if delta is not None:
        ratio = torch.clamp(ratio, max=delta)
    per_token = -torch.min(ratio * adv[:, None], clipped * adv[:, None])
    if beta:
        per_token = per_token + beta * (torch.exp(ref - logps) - (ref - logps) - 1)
    per_token = per_token * mask
    if loss_type == "grpo":
        return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return per_token.sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        return per_token.sum() / (mask.shape[0] * max_len)
    return per_token.sum() / max(float(num_items), 1.0)


def make(shape, dtype=torch.float32, seed=0, with_bias=True):
    b, t, h, v = shape
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) / h ** 0.5).to(dtype)
    bias = (0.1 * torch.randn(v, generator=g)).to(dtype) if with_bias else None
    ids = torch.randint(0, v, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, v + 5))  # padding ids need not be valid
    with torch.no_grad():
        base = torch.log_softmax(hidden.double() @ weight.double().T, -1).gather(-1, ids.clamp(max=v - 1)[..., None])[..., 0]
    old = (base + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)).float()
    ref = (base + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64)).float()
    adv = torch.randn(b, generator=g)
    return hidden, weight, bias, ids, old, adv, mask, ref


def run_both(shape, backend, *, dtype=torch.float32, on_policy=False, **kw):
    hidden, weight, bias, ids, old, adv, mask, ref = make(shape, dtype)
    kw = dict(dict(beta=0.04, loss_type="grpo", eps_low=0.2, eps_high=0.28, delta=None, level="token",
                   temperature=1.0, max_len=shape[1] + 3, num_items=mask.sum().item() + 2), **kw)
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight, bias)]
    loss, stats = fused_grpo_loss(
        leaves[0], leaves[1], ids, None if on_policy else old, adv, mask, bias=leaves[2], ref_logps=ref,
        beta=kw["beta"], loss_type=kw["loss_type"], epsilon_low=kw["eps_low"], epsilon_high=kw["eps_high"],
        delta=kw["delta"], importance_sampling_level=kw["level"], temperature=kw["temperature"],
        max_completion_length=kw["max_len"], num_items_in_batch=torch.tensor(kw["num_items"]), backend=backend)
    grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.detach().double().requires_grad_() for t in (hidden, weight, bias)]
    expected = reference(ref_leaves[0], ref_leaves[1], ref_leaves[2], ids, None if on_policy else old.double(),
                         adv.double(), mask.double(), ref.double(), **kw)
    expected_grads = torch.autograd.grad(expected, ref_leaves)
    return loss, grads, expected, expected_grads, stats


def assert_matches(loss, grads, expected, expected_grads, atol=2e-5, rtol=2e-4):
    torch.testing.assert_close(loss.double(), expected, atol=atol, rtol=rtol)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_torch_path_matches_float64(shape, loss_type, level):
    assert_matches(*run_both(shape, "torch", loss_type=loss_type, level=level)[:4])


@pytest.mark.parametrize("beta,delta,temperature,on_policy", [(0.0, None, 1.0, False), (0.04, 1.5, 0.7, False),
                                                              (0.1, None, 1.3, True)])
def test_options_match_float64(beta, delta, temperature, on_policy):
    out = run_both(SHAPES[1], None, beta=beta, delta=delta, temperature=temperature, on_policy=on_policy)
    assert_matches(*out[:4])
    assert ("kl" in out[4]) == (beta > 0)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_numba_path_matches_float64(loss_type):
    assert_matches(*run_both(SHAPES[2], "numba", loss_type=loss_type, level="sequence")[:4])


@pytest.mark.skipif(HAS_CUDA or not triton_available(), reason="interpreter test (CPU only)")
def test_triton_path_under_interpreter_matches_float64():
    assert_matches(*run_both((2, 5, 16, 67), "triton", loss_type="dapo")[:4])


def test_bf16_inputs_within_bf16_tolerance():
    loss, grads, expected, expected_grads, _ = run_both(SHAPES[1], "torch", dtype=torch.bfloat16)
    torch.testing.assert_close(loss.double(), expected, atol=3e-2, rtol=3e-2)


def test_clear_errors():
    hidden, weight, bias, ids, old, adv, mask, ref = make(SHAPES[1])
    with pytest.raises(ValueError, match="weight must be"):
        fused_grpo_loss(hidden, weight[:, :-1], ids, old, adv, mask)
    with pytest.raises(ValueError, match="ids and mask must be"):
        fused_grpo_loss(hidden, weight, ids[:, :-1], old, adv, mask)
    with pytest.raises(ValueError, match="hidden must have 3 dims"):
        fused_grpo_loss(hidden[0], weight, ids, old, adv, mask)


@pytest.mark.gpu
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_cuda_bf16_matches_float64(loss_type):
    hidden, weight, bias, ids, old, adv, mask, ref = [None if t is None else t.cuda() for t in make((4, 64, 256, 32011))]
    hidden, weight = hidden.bfloat16().requires_grad_(), weight.bfloat16().requires_grad_()
    loss, _ = fused_grpo_loss(hidden, weight, ids, old, adv, mask, ref_logps=ref, beta=0.04, loss_type=loss_type)
    loss.backward()
    expected = reference(hidden.double(), weight.double(), None, ids, old.double(), adv.double(), mask.double(),
                         ref.double(), beta=0.04, loss_type=loss_type, eps_low=0.2, eps_high=0.2, delta=None,
                         level="token", temperature=1.0, max_len=64, num_items=mask.sum().item())
    torch.testing.assert_close(loss.double(), expected, atol=3e-2, rtol=3e-2)
