"""fused_grpo_loss against a float64 reference written here: full logits, log_softmax, gather,
TRL's clipped-ratio loss with k3 KL and its four normalisations; loss and gradients of hidden,
weight and bias for every loss type x IS level x beta x delta x temperature, awkward shapes,
masked sequences, strided views, half precision, on the torch, numba and (interpreted) Triton
paths. Double backward is not supported (the forward computes the gradients): tested to raise."""
import pytest
import torch
from conftest import HAS_CUDA, numba_available, triton_available

from tempo_fast.ops import fused_grpo_loss, grpo_loss, selective_logprobs

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


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("delta", [None, 1.1])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_every_option_matches_float64(loss_type, level, beta, delta, temperature):
    # delta = 1.1 sits inside the ratios drawn here (old = logp + 0.2 noise), so the cap binds
    out = run_both((3, 7, 16, 97), "torch", loss_type=loss_type, level=level, beta=beta, delta=delta,
                   temperature=temperature)
    assert_matches(*out[:4])
    assert ("kl" in out[4]) == (beta > 0)


@pytest.mark.parametrize("beta,delta,temperature,on_policy", [(0.0, None, 1.0, False), (0.04, 1.5, 0.7, False),
                                                              (0.1, None, 1.3, True)])
def test_options_match_float64(beta, delta, temperature, on_policy):
    out = run_both(SHAPES[1], None, beta=beta, delta=delta, temperature=temperature, on_policy=on_policy)
    assert_matches(*out[:4])
    assert ("kl" in out[4]) == (beta > 0)


# B*T = 769 crosses three 256-row CPU blocks; T = 769 > 256 makes sequence-level IS take the
# first-pass (four-matmul) route, B = 9 x T = 100 the whole-sequence chunks (two sequences each).
@pytest.mark.parametrize("shape,level", [((1, 769, 8, 33), "token"), ((1, 769, 8, 33), "sequence"),
                                         ((9, 100, 8, 37), "sequence"), ((7, 1, 8, 5), "token")])
def test_awkward_shapes_match_float64(shape, level):
    assert_matches(*run_both(shape, "torch", loss_type="bnpo", level=level)[:4])


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_fully_masked_sequences_and_batches(level):
    hidden, weight, bias, ids, old, adv, mask, ref = make((4, 6, 8, 29))
    mask[1] = 0.0  # one sequence without a scored token
    mask[3, 2:] = 0.0
    for m in (mask, torch.zeros_like(mask)):
        leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight, bias)]
        loss, stats = fused_grpo_loss(leaves[0], leaves[1], ids, old, adv, m, bias=leaves[2], ref_logps=ref,
                                      beta=0.04, importance_sampling_level=level, backend="torch")
        grads = torch.autograd.grad(loss, leaves)
        r_leaves = [t.detach().double().requires_grad_() for t in (hidden, weight, bias)]
        expected = reference(*r_leaves, ids, old.double(), adv.double(), m.double(), ref.double(), beta=0.04,
                             loss_type="grpo", eps_low=0.2, eps_high=0.2, delta=None, level=level,
                             temperature=1.0, max_len=6, num_items=1)
        assert_matches(loss, grads, expected, torch.autograd.grad(expected, r_leaves))
        assert torch.equal(grads[0][1], torch.zeros_like(grads[0][1]))  # the empty sequence gets nothing
    assert float(loss.detach()) == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)


def test_non_contiguous_inputs():
    hidden, weight, bias, ids, old, adv, mask, ref = make((3, 7, 16, 97))
    h_view = torch.randn(7, 3, 32).transpose(0, 1)[..., ::2]  # strided in every dim
    h_view.copy_(hidden)
    w_view = weight.T.contiguous().T  # [V, H] with column-major strides
    ids_view, old_view = ids.T.contiguous().T, old.T.contiguous().T
    leaves = [h_view.requires_grad_(), w_view.requires_grad_()]
    loss, _ = fused_grpo_loss(leaves[0], leaves[1], ids_view, old_view, adv, mask.T.contiguous().T,
                              ref_logps=ref, beta=0.04, backend="torch")
    grads = torch.autograd.grad(loss, leaves)
    r_leaves = [t.detach().double().requires_grad_() for t in (hidden, weight)]
    expected = reference(*r_leaves, None, ids, old.double(), adv.double(), mask.double(), ref.double(), beta=0.04,
                         loss_type="grpo", eps_low=0.2, eps_high=0.2, delta=None, level="token", temperature=1.0,
                         max_len=7, num_items=1)
    assert_matches(loss, grads, expected, torch.autograd.grad(expected, r_leaves))


# Half precision: the error against float64 may be a few times the rounding of the inputs.
LOW_TOLERANCES = {torch.bfloat16: dict(atol=2e-2, rtol=3e-2), torch.float16: dict(atol=3e-3, rtol=5e-3)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_within_tolerance(dtype):
    loss, grads, expected, expected_grads, _ = run_both(SHAPES[1], "torch", dtype=dtype)
    assert all(g.dtype == dtype for g in grads)
    tol = LOW_TOLERANCES[dtype]
    torch.testing.assert_close(loss.double(), expected, **tol)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, **tol)


def test_incoming_gradient_scales_and_only_needed_grads():
    hidden, weight, bias, ids, old, adv, mask, ref = make(SHAPES[1])
    kw = dict(ref_logps=ref, beta=0.04, bias=bias, backend="torch")
    h = hidden.clone().requires_grad_()
    loss, _ = fused_grpo_loss(h, weight, ids, old, adv, mask, **kw)  # weight and bias frozen
    (g1,) = torch.autograd.grad(loss, [h])
    loss, _ = fused_grpo_loss(h, weight, ids, old, adv, mask, **kw)
    (-2.5 * loss).backward()
    torch.testing.assert_close(h.grad, -2.5 * g1)
    with torch.no_grad():
        loss_ng, stats_ng = fused_grpo_loss(h, weight, ids, old, adv, mask, **kw)
    assert not loss_ng.requires_grad
    torch.testing.assert_close(loss_ng, loss.detach())


def test_no_double_backward():
    hidden, weight, bias, ids, old, adv, mask, ref = make(SHAPES[1])
    h = hidden.clone().requires_grad_()
    loss, _ = fused_grpo_loss(h, weight, ids, old, adv, mask, backend="torch")
    (g,) = torch.autograd.grad(loss, [h], create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_loss_and_stats_equal_grpo_loss_on_full_logits():
    hidden, weight, bias, ids, old, adv, mask, ref = make((4, 9, 16, 97))
    for level in ("token", "sequence"):
        kw = dict(ref_logps=ref, beta=0.04, epsilon_high=0.28, delta=1.2, importance_sampling_level=level,
                  backend="torch")
        loss, stats = fused_grpo_loss(hidden, weight, ids, old, adv, mask, bias=bias, **kw)
        logps = selective_logprobs(hidden @ weight.T + bias, torch.where(mask.bool(), ids, -1))
        want_loss, want_stats = grpo_loss(logps, old, adv, mask, **kw)
        torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
        assert stats.keys() == want_stats.keys()
        for name in stats:
            torch.testing.assert_close(stats[name], want_stats[name], rtol=1e-5, atol=1e-6)


def test_grad_hidden_rows_are_batch_invariant():
    # dapo with a fixed num_items_in_batch: d loss / d logp of a token does not depend on the batch,
    # so its grad_hidden row must be bit-identical alone and among other sequences (grad_weight,
    # a sum over rows, cannot be).
    hidden, weight, bias, ids, old, adv, mask, ref = make((5, 120, 16, 97))
    kw = dict(ref_logps=ref, beta=0.04, loss_type="dapo", num_items_in_batch=50, backend="torch")
    h = hidden.clone().requires_grad_()
    (g_all,) = torch.autograd.grad(fused_grpo_loss(h, weight, ids, old, adv, mask, **kw)[0], [h])
    for b in (1, 4):
        h_b = hidden[b:b + 1].clone().requires_grad_()
        kw_b = dict(kw, ref_logps=ref[b:b + 1])
        loss_b, _ = fused_grpo_loss(h_b, weight, ids[b:b + 1], old[b:b + 1], adv[b:b + 1], mask[b:b + 1], **kw_b)
        (g_b,) = torch.autograd.grad(loss_b, [h_b])
        assert torch.equal(g_b[0], g_all[b])


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_numba_path_matches_float64(loss_type):
    assert_matches(*run_both(SHAPES[2], "numba", loss_type=loss_type, level="sequence")[:4])


@pytest.mark.skipif(HAS_CUDA or not triton_available(), reason="interpreter test (CPU only)")
@pytest.mark.parametrize("shape,loss_type,level,temperature", [((2, 5, 16, 67), "dapo", "token", 1.0),
                                                               ((3, 4, 8, 1031), "grpo", "sequence", 0.7),
                                                               ((1, 1, 8, 5), "dr_grpo", "token", 1.3)])
def test_triton_path_under_interpreter_matches_float64(shape, loss_type, level, temperature):
    # V = 1031 is one column past the kernels' 1024-column blocks
    assert_matches(*run_both(shape, "triton", loss_type=loss_type, level=level, temperature=temperature)[:4])


@pytest.mark.skipif(HAS_CUDA or not triton_available(), reason="interpreter test (CPU only)")
def test_triton_path_under_interpreter_bf16_and_no_grad():
    loss, grads, expected, expected_grads, _ = run_both((2, 3, 8, 70), "triton", dtype=torch.bfloat16)
    tol = LOW_TOLERANCES[torch.bfloat16]
    torch.testing.assert_close(loss.double(), expected, **tol)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, **tol)
    hidden, weight, bias, ids, old, adv, mask, ref = make((2, 3, 8, 70))
    with torch.no_grad():
        got, _ = fused_grpo_loss(hidden, weight, ids, old, adv, mask, backend="triton")
    want, _ = fused_grpo_loss(hidden, weight, ids, old, adv, mask, backend="torch")
    torch.testing.assert_close(got, want)


def test_clear_errors():
    hidden, weight, bias, ids, old, adv, mask, ref = make(SHAPES[1])
    with pytest.raises(ValueError, match="weight must be"):
        fused_grpo_loss(hidden, weight[:, :-1], ids, old, adv, mask)
    with pytest.raises(ValueError, match="ids and mask must be"):
        fused_grpo_loss(hidden, weight, ids[:, :-1], old, adv, mask)
    with pytest.raises(ValueError, match="hidden must have 3 dims"):
        fused_grpo_loss(hidden[0], weight, ids, old, adv, mask)
    with pytest.raises(TypeError, match="weight must have hidden's dtype"):
        fused_grpo_loss(hidden, weight.half(), ids, old, adv, mask)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        fused_grpo_loss(hidden, weight, ids, old, adv, mask, loss_type="sum")
    with pytest.raises(ValueError, match="ids must be < vocabulary size"):
        fused_grpo_loss(hidden, weight, torch.full_like(ids, weight.shape[0]), old, adv, torch.ones_like(mask))
    with pytest.raises(ValueError, match="bias must be"):
        fused_grpo_loss(hidden, weight, ids, old, adv, mask, bias=bias[:-1])


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
