"""grpo_loss against a float64 reference written here from TRL 1.16.0's `_compute_loss`, and
against TRL's own `_compute_loss` called on the same inputs."""
import collections
import itertools
import types

import pytest
import torch

from conftest import TOLERANCES, numba_available, triton_available
from tempo_fast.ops import grpo_loss

# [B, T] with B*T of 1, 7, 769 and 4097 (= 17 x 241), plus shapes with several Triton T-blocks.
SHAPES = [(1, 1), (1, 7), (7, 1), (1, 769), (769, 1), (17, 241), (3, 1030)]
SMALL_SHAPES = [(1, 1), (1, 7), (7, 1), (5, 37), (3, 1030)]
LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]
LEVELS = ["token", "sequence"]
CONFIGS = list(itertools.product(LOSS_TYPES, LEVELS, [0.0, 0.04], [None, 1.5]))
TRL_METRICS = {"clip_low": "clip_ratio/low_mean", "clip_high": "clip_ratio/high_mean",
               "clip_region": "clip_ratio/region_mean", "kl": "kl"}


def backends():
    return ["torch"] + (["numba"] if numba_available() else []) + (["triton"] if triton_available() else [])


def make_inputs(B, T, seed, dtype=torch.float32):
    """Log-probs whose token and sequence ratios cross both clip bounds and delta=1.5."""
    gen = torch.Generator().manual_seed(seed)
    logps = -5 * torch.rand(B, T, generator=gen, dtype=torch.float64)
    shift = 0.2 * torch.randn(B, 1, generator=gen, dtype=torch.float64)
    old = logps + 0.15 * torch.randn(B, T, generator=gen, dtype=torch.float64) + shift
    ref = logps + 0.1 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    mask = torch.rand(B, T, generator=gen) < 0.8
    mask[:, 0] = True
    if B > 2:
        mask[1] = False  # a sequence without tokens
    return logps.to(dtype), old.to(dtype), ref.to(dtype), adv.to(dtype), mask


def reference(logps, old, adv, mask, ref, *, beta, loss_type, level, delta, eps_low=0.2, eps_high=0.2,
              num_items=None, max_len=None):
    """Float64 (loss, stats, d loss/d logps), read off TRL's GRPOTrainer._compute_loss."""
    lp = logps.detach().double().requires_grad_()
    m = mask.double()
    a = adv.double()[:, None]
    prev = lp.detach() if old is None else old.double()
    B, T = lp.shape
    tokens_per_seq = m.sum(1)
    tokens = m.sum()
    if level == "token":
        log_w = lp - prev
    else:  # GSPO: one ratio per sequence, from its mean log-ratio over real tokens
        log_w = ((lp - prev) * m).sum(1, keepdim=True) / tokens_per_seq.clamp(min=1)[:, None]
    w = log_w.exp()
    capped = w if delta is None else w.clamp(max=delta)
    unclipped, clipped = capped * a, w.clamp(1 - eps_low, 1 + eps_high) * a
    per_token = -torch.where(unclipped <= clipped, unclipped, clipped)
    per_token = per_token.expand(B, T)
    if beta:
        d = ref.double() - lp
        kl = d.exp() - d - 1
        per_token = per_token + beta * kl
    total = (per_token * m).sum()
    if loss_type == "grpo":
        loss = ((per_token * m).sum(1) / tokens_per_seq.clamp(min=1)).sum() / B
    elif loss_type == "bnpo":
        loss = total / max(tokens.item(), 1.0)
    elif loss_type == "dr_grpo":
        loss = total / (B * (T if max_len is None else max_len))
    else:
        loss = total / max(tokens.item() if num_items is None else float(num_items), 1.0)
    (grad,) = torch.autograd.grad(loss, lp)

    low = ((capped < 1 - eps_low) & (a < 0)).double()
    high = ((capped > 1 + eps_high) & (a > 0)).double()
    if level == "token":
        def average(x):
            return (x * m).sum() / max(tokens.item(), 1.0)
    else:
        def average(x):
            return x.mean()
    stats = {"clip_low": average(low), "clip_high": average(high),
             "clip_region": average(torch.maximum(low, high)), "ratio": average(w.detach())}
    if beta:
        stats["kl"] = (kl.detach() * m).sum() / max(tokens.item(), 1.0)
    return loss.detach(), stats, grad


def check(backend, logps, old, adv, mask, ref, *, beta, loss_type, level, delta, grad_tol=None, **extra):
    lp = logps.detach().clone().requires_grad_()
    loss, stats = grpo_loss(lp, old, adv, mask, ref_logps=ref, beta=beta, loss_type=loss_type,
                            importance_sampling_level=level, delta=delta, backend=backend, **extra)
    loss.backward()
    names = dict(num_items=extra.get("num_items_in_batch"), max_len=extra.get("max_completion_length"))
    exp_loss, exp_stats, exp_grad = reference(logps, old, adv, mask, ref, beta=beta, loss_type=loss_type,
                                              level=level, delta=delta, **names)
    tol = TOLERANCES[torch.float32]
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), exp_loss, **tol)
    assert sorted(stats) == sorted(exp_stats)
    for name, value in exp_stats.items():
        assert not stats[name].requires_grad
        torch.testing.assert_close(stats[name].double(), value, **tol, msg=name)
    assert lp.grad.dtype == logps.dtype and lp.grad.shape == logps.shape
    torch.testing.assert_close(lp.grad.double(), exp_grad, **(grad_tol or TOLERANCES[logps.dtype]))


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("shape", SHAPES)
def test_shapes(shape, backend):
    if backend == "triton" and shape not in SMALL_SHAPES:
        pytest.skip("interpreter: small shapes only")
    logps, old, ref, adv, mask = make_inputs(*shape, seed=sum(shape))
    for loss_type, level in itertools.product(LOSS_TYPES, LEVELS):
        check(backend, logps, old, adv, mask, ref, beta=0.04, loss_type=loss_type, level=level, delta=1.5)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("loss_type, level, beta, delta", CONFIGS)
def test_every_config(loss_type, level, beta, delta, backend):
    logps, old, ref, adv, mask = make_inputs(5, 37, seed=1)
    check(backend, logps, old, adv, mask, ref, beta=beta, loss_type=loss_type, level=level, delta=delta)
    check(backend, logps, None, adv, mask, ref, beta=beta, loss_type=loss_type, level=level, delta=delta)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_input_dtypes(dtype, backend):
    logps, old, ref, adv, mask = make_inputs(4, 29, seed=2, dtype=dtype)
    for loss_type, level in itertools.product(LOSS_TYPES, LEVELS):
        # The gradient is rounded to the input dtype (fp64: computed in fp32, so fp32 tolerance).
        grad_tol = TOLERANCES[torch.float32] if dtype == torch.float64 else None
        check(backend, logps, old, adv, mask, ref, beta=0.04, loss_type=loss_type, level=level, delta=None,
              grad_tol=grad_tol)


@pytest.mark.parametrize("backend", backends())
def test_non_contiguous_and_mask_dtypes(backend):
    logps, old, ref, adv, mask = make_inputs(6, 40, seed=3)
    views = [t.t().contiguous().t() for t in (logps, old, ref)]  # column-major [B, T] views
    adv_view = torch.stack([adv, adv], 1)[:, 0]
    assert not views[0].is_contiguous() and not adv_view.is_contiguous()
    for mask_view in (mask, mask.long(), mask.float()[:, :, None].expand(6, 40, 2)[..., 1]):
        for level in LEVELS:
            check(backend, views[0], views[1], adv_view, mask_view, views[2], beta=0.04, loss_type="grpo",
                  level=level, delta=1.5)


@pytest.mark.parametrize("backend", backends())
def test_normaliser_arguments(backend):
    logps, old, ref, adv, mask = make_inputs(4, 16, seed=4)
    for num_items in (37, torch.tensor(12.0), 0):
        check(backend, logps, old, adv, mask, ref, beta=0.0, loss_type="dapo", level="token", delta=None,
              num_items_in_batch=num_items)
    check(backend, logps, old, adv, mask, ref, beta=0.0, loss_type="dr_grpo", level="sequence", delta=None,
          max_completion_length=64)


@pytest.mark.parametrize("backend", backends())
def test_no_grad_and_gradient_scaling(backend):
    logps, old, ref, adv, mask = make_inputs(3, 9, seed=5)
    loss, _ = grpo_loss(logps, old, adv, mask, backend=backend)  # no input requires grad
    assert not loss.requires_grad
    lp = logps.clone().requires_grad_()
    loss, _ = grpo_loss(lp, old, adv, mask, backend=backend)
    (3.0 * loss).backward()
    _, _, exp_grad = reference(logps, old, adv, mask, None, beta=0.0, loss_type="grpo", level="token", delta=None)
    torch.testing.assert_close(lp.grad.double(), 3.0 * exp_grad, **TOLERANCES[torch.float32])


def _trl_self(beta, loss_type, level, delta, max_len):
    """The attributes GRPOTrainer._compute_loss reads, for one process without accumulation."""
    accelerator = types.SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                                        reduce=lambda x, reduction: x)
    args = types.SimpleNamespace(delta=delta, use_bias_correction_kl=False, steps_per_generation=1)
    return types.SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
        args=args, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.2, use_vllm=False,
        vllm_importance_sampling_correction=False, model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=max_len, accelerator=accelerator,
        _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": collections.defaultdict(list)})


@pytest.mark.parametrize("backend", backends())
def test_same_numbers_as_trl(backend):
    trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    B, T = 6, 23
    logps, old, ref, adv, mask = make_inputs(B, T, seed=6)
    for (loss_type, level, beta, delta), on_policy in itertools.product(CONFIGS, [False, True]):
        fake = _trl_self(beta, loss_type, level, delta, max_len=30)
        trl_lp = logps.clone().requires_grad_()
        fake._get_per_token_logps_and_entropies = lambda *a, **k: (trl_lp, torch.zeros(B, T), None)
        inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
                  "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask.long(),
                  "advantages": adv, "ref_per_token_logps": ref, "num_items_in_batch": torch.tensor(41.0)}
        if not on_policy:
            inputs["old_per_token_logps"] = old
        trl_loss = trainer.GRPOTrainer._compute_loss(fake, None, inputs)
        trl_loss.backward()
        lp = logps.clone().requires_grad_()
        loss, stats = grpo_loss(lp, None if on_policy else old, adv, mask, ref_logps=ref, beta=beta,
                                loss_type=loss_type, delta=delta, importance_sampling_level=level,
                                num_items_in_batch=41, max_completion_length=30, backend=backend)
        loss.backward()
        tol = TOLERANCES[torch.float32]
        torch.testing.assert_close(loss, trl_loss.detach(), **tol)
        torch.testing.assert_close(lp.grad, trl_lp.grad, **tol)
        metrics = fake._metrics["train"]
        for name, trl_name in TRL_METRICS.items():
            if name != "kl" or beta:
                torch.testing.assert_close(stats[name].item(), metrics[trl_name][0], **tol, msg=name)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(logps=torch.zeros(2, 3, 4)), ValueError, "logps must have 2 dims, got shape (2, 3, 4)"),
    (dict(logps=torch.zeros(2, 3, dtype=torch.int32)), TypeError, "logps must be one of"),
    (dict(old_logps=torch.zeros(2, 4)), ValueError, "old_logps must have the shape of logps (2, 3), got (2, 4)"),
    (dict(mask=torch.ones(3, 2)), ValueError, "mask must have the shape of logps (2, 3), got (3, 2)"),
    (dict(mask=torch.ones(2, 3, dtype=torch.complex64)), TypeError, "mask must be one of"),
    (dict(advantages=torch.zeros(2, 1)), ValueError, "advantages must have 1 dims"),
    (dict(advantages=torch.zeros(3)), ValueError, "advantages must have shape (2,)"),
    (dict(loss_type="ppo"), ValueError, "loss_type must be one of ('grpo', 'bnpo', 'dr_grpo', 'dapo'), got 'ppo'"),
    (dict(importance_sampling_level="seq"), ValueError, "importance_sampling_level must be one of"),
    (dict(beta=0.1), ValueError, "beta=0.1 needs ref_logps"),
    (dict(beta=-1.0), ValueError, "beta must be a non-negative number, got -1.0"),
    (dict(delta=0.0), ValueError, "delta must be None or a positive number"),
    (dict(max_completion_length=0), ValueError, "max_completion_length must be None or a positive int, got 0"),
    (dict(num_items_in_batch="7"), TypeError, "num_items_in_batch must be a number or a tensor, got str"),
    (dict(backend="tpu"), ValueError, "backend must be one of"),
])
def test_errors(kwargs, error, words):
    args = dict(logps=torch.zeros(2, 3), old_logps=None, advantages=torch.zeros(2), mask=torch.ones(2, 3))
    args.update(kwargs)
    with pytest.raises(error) as info:
        grpo_loss(args.pop("logps"), args.pop("old_logps"), args.pop("advantages"), args.pop("mask"), **args)
    assert words in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize("level", LEVELS)
def test_cuda_many_rows(level):
    # 70,000 sequences: more rows than one grid dimension of 65,535 programs could hold.
    logps, old, ref, adv, mask = make_inputs(70_000, 5, seed=7)
    cuda = [t.cuda() for t in (logps, old, ref, adv, mask)]
    check(None, cuda[0], cuda[1], cuda[3], cuda[4], cuda[2], beta=0.04, loss_type="bnpo", level=level, delta=1.5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_every_config(dtype):
    logps, old, ref, adv, mask = make_inputs(16, 1500, seed=8, dtype=dtype)
    cuda = [t.cuda() for t in (logps, old, ref, adv, mask)]
    for loss_type, level, beta, delta in CONFIGS:
        check(None, cuda[0], cuda[1], cuda[3], cuda[4], cuda[2], beta=beta, loss_type=loss_type, level=level,
              delta=delta)


def test_default_backend_on_cpu():
    # Small inputs go to numba (when installed), large ones to torch: both must match the reference.
    for shape in [(4, 16), (2, 20_000)]:
        logps, old, ref, adv, mask = make_inputs(*shape, seed=9)
        check(None, logps, old, adv, mask, ref, beta=0.04, loss_type="bnpo", level="token", delta=None)
