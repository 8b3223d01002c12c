"""Tests of the PIR-GRPO loop (tempo_fast.train.grpo) on the tiny preset, CPU, fp32.

The oracle for the loss is independent of the code under test: per-sequence full forward passes
of the transformers model (plain logits, prompt + completion, batch 1) -> log_softmax -> TRL's
GRPO formula written out here, over the whole batch at once; its parameter gradient is compared
with the update of a plain SGD step (lr 1, no clipping) taken by `grpo_step`.
"""
import copy
import dataclasses
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast.data.loaders import GroundingRecord  # noqa: E402
from tempo_fast.rollout import RolloutEngine, SamplingConfig  # noqa: E402
from tempo_fast.rewards import RewardConfig  # noqa: E402
from tempo_fast.train import grpo_rollouts  # noqa: E402
from tempo_fast.train.config import DataConfig, GRPOConfig, ModelConfig, OptimConfig, RunConfig  # noqa: E402
from tempo_fast.train.grpo import completion_hidden, group_rewards, grpo_step  # noqa: E402
from tiny_vl import tiny_name  # noqa: E402

G = 4
NEW = 8


@pytest.fixture(scope="module")
def base_vl():
    from tempo_fast.model import load_model
    vl = load_model(tiny_name())
    # A sharper head than the random preset's nearly flat logits: sampled completions differ in
    # length and content, and log-prob errors are not hidden by a uniform distribution.
    with torch.no_grad():
        vl.lm_head.weight.mul_(20)
    return vl


def _fresh(vl):
    """A VLModel with its own copy of the weights (tests update them)."""
    return dataclasses.replace(vl, model=copy.deepcopy(vl.model))


def _record(kind: str, i: int) -> GroundingRecord:
    windows = ((1.0, 3.0),) if kind == "relevant" else ()
    return GroundingRecord(id=f"q{i}", video_id=f"v{i}", video_path=None, duration=6.0,
                           query=f"the red circle moves {i}", windows=windows, relevance=kind)


@pytest.fixture(scope="module")
def samples(base_vl):
    from tempo_fast.model import build_prompt
    out = []
    for i, kind in enumerate(("relevant", "irrelevant", "partial")):
        gen = torch.Generator().manual_seed(i)
        frames = torch.randint(0, 256, (4, 3, 56, 56), dtype=torch.uint8, generator=gen)
        pts = torch.tensor([0.0, 0.5, 3.0, 3.5], dtype=torch.float64) + i
        record = _record(kind, i)
        prompt = build_prompt(base_vl, (frames, pts), record.query, min_pixels=56 * 56, max_pixels=56 * 56)
        out.append(SimpleNamespace(prompt=prompt, record=record, relevance=kind, target=""))
    return out


def _cfg(**kw) -> GRPOConfig:
    optim = kw.pop("optim", OptimConfig(lr=1.0, grad_clip=0.0, warmup_steps=0))
    return GRPOConfig(num_generations=G, max_new_tokens=NEW, optim=optim, **kw)


def _text_reward(texts, sample):
    """Rewards that vary with the sampled text (the random model never answers well)."""
    return torch.tensor([float(sum(map(ord, t)) % 7) for t in texts]), {}


def _engine(vl, cfg):
    return RolloutEngine(vl, SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature))


# ---------------------------------------------------------------- independent reference


def _plain_logps(model, prompt, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of `ids` [G, T] after `prompt`, one full forward per sequence.

    The prompt's video features are scattered into its own <|video_pad|> slots by hand (inputs
    embeddings), so a completion that happens to sample a <|video_pad|> id stays a text token."""
    length, width = prompt.input_ids.shape[1], ids.shape[1]
    base = model.model
    features = base.get_video_features(prompt.pixel_values_videos, prompt.video_grid_thw).pooler_output
    features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
    slots = (prompt.input_ids[0] == model.config.video_token_id).nonzero()[:, 0]
    rows = []
    for row in ids:
        full = torch.cat([prompt.input_ids[0], row])[None]
        embeds = base.get_input_embeddings()(full).clone()
        embeds[0, slots] = features.to(embeds.dtype)
        tail = (prompt.next_position + torch.arange(width)).view(1, 1, -1).expand(3, 1, -1)
        logits = model(inputs_embeds=embeds, attention_mask=torch.ones_like(full),
                       position_ids=torch.cat([prompt.position_ids, tail], -1)).logits[0, length - 1:length - 1 + width]
        rows.append(torch.log_softmax(logits.double() / temperature, -1).gather(-1, row[:, None])[:, 0])
    return torch.stack(rows)


def _trl_loss(logps, old, ref, adv, mask, *, loss_type, beta, eps_low, eps_high, max_len):
    """TRL GRPOTrainer's token-level loss written out (float64)."""
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(coef_1 * adv[:, None], coef_2 * adv[:, None])
    if beta:
        per_token = per_token + beta * (torch.exp(ref - logps) - (ref - logps) - 1)
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "dr_grpo":
        return masked.sum() / (logps.shape[0] * max_len)
    return masked.sum() / mask.sum().clamp(min=1)  # bnpo, and dapo on one process and micro-batch


def _pad_cat(tensors, width):
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors])


def _reference(model, groups, cfg, *, ref=None, micro=None):
    """(loss, {name: grad}) of the batch through plain logits. `micro`: the micro-batch sizes of
    gradient accumulation; as in TRL each micro-batch's loss is divided by their number, except
    dapo, normalised by the tokens of the whole batch."""
    micro = micro or [len(groups)]
    width = max(g.rollout.completion_ids.shape[1] for g in groups)
    logps = _pad_cat([_plain_logps(model, g.sample.prompt, g.rollout.completion_ids, cfg.temperature)
                      for g in groups], width)
    mask = _pad_cat([g.rollout.completion_mask.double() for g in groups], width)
    logps = logps * mask
    adv = torch.cat([g.advantages.double() for g in groups])
    kw = dict(loss_type=cfg.loss_type, beta=cfg.beta, eps_low=cfg.epsilon_low, eps_high=cfg.epsilon_high,
              max_len=cfg.max_new_tokens)
    if cfg.loss_type == "dapo":
        loss = _trl_loss(logps, logps.detach(), ref, adv, mask, **kw)
    else:
        loss, start = 0.0, 0
        for size in micro:
            rows = slice(start * G, (start + size) * G)
            part_ref = None if ref is None else ref[rows]
            loss = loss + _trl_loss(logps[rows], logps[rows].detach(), part_ref, adv[rows], mask[rows], **kw) / len(micro)
            start += size
    model.zero_grad(set_to_none=True)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------- tests


def test_group_rewards_are_pir_rewards(samples):
    texts = ["<answer>1.0 to 2.0</answer>", "<answer>none</answer>", "1 to 3 maybe", "<answer>0.0 to 6.0</answer>"]
    relevant, irrelevant, partial = samples
    rewards, stats = group_rewards(texts, relevant, RewardConfig(format_weight=0.1))
    # IoU with (1, 3): [1, 2] -> 1/2; refusal -> 0; unformatted but readable [1, 3] -> 1; [0, 6] -> 2/6
    torch.testing.assert_close(rewards, torch.tensor([0.6, 0.1, 1.0, 2 / 6 + 0.1]))
    torch.testing.assert_close(stats["iou"], torch.tensor([0.5, 0.0, 1.0, 2 / 6]))
    for sample in (irrelevant, partial):
        rewards, stats = group_rewards(texts, sample, RewardConfig(format_weight=0.1))
        torch.testing.assert_close(rewards, torch.tensor([0.1, 1.1, 0.0, 0.1]))
        torch.testing.assert_close(stats["refused"], torch.tensor([0.0, 1.0, 0.0, 0.0]))


def test_shared_prefill_equals_repeated_prompt(base_vl, samples):
    prompt = samples[0].prompt
    rollout = _engine(base_vl, _cfg()).generate(prompt, G, generator=torch.Generator().manual_seed(0))
    shared = completion_hidden(base_vl.model, prompt, rollout.completion_ids, share_prefill=True)
    repeated = completion_hidden(base_vl.model, prompt, rollout.completion_ids, share_prefill=False)
    torch.testing.assert_close(shared, repeated, atol=1e-5, rtol=1e-5)


def test_activation_checkpointing_step_equals_shared_prefill_step(base_vl, samples):
    """With activation checkpointing the prompt is repeated G times instead of shared: same update."""
    from tempo_fast.train.config import ModelConfig
    from tempo_fast.train.sft import prepare_model
    cfg, updates = _cfg(), []
    for checkpointing in (False, True):
        vl = _fresh(base_vl)
        prepare_model(vl, ModelConfig(freeze_vision=False, activation_checkpointing=checkpointing))
        assert grpo_rollouts._shares_prefill(vl.model) is not checkpointing
        before = [p.detach().clone() for p in vl.model.parameters()]
        grpo_step(vl, samples[:1], cfg, engine=_engine(vl, cfg), optimizer=torch.optim.SGD(vl.model.parameters(), lr=1.0),
                  generator=torch.Generator().manual_seed(6), reward_fn=_text_reward)
        updates.append([b - p.detach() for b, p in zip(before, vl.model.parameters())])
    # fp32: the G-fold gradient sum through the expanded cache vs through G repeated prompts rounds
    # differently (seen: 7e-6 on an element of 0.03)
    for a, b in zip(*updates):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert any(a.abs().sum() > 0 for a in updates[0])


@pytest.mark.parametrize("loss_type,level,accum", [("grpo", "token", 1), ("bnpo", "token", 2),
                                                   ("dr_grpo", "token", 1), ("dapo", "token", 2),
                                                   ("grpo", "sequence", 1)])
def test_step_loss_and_update_match_trl_formula(base_vl, samples, loss_type, level, accum):
    vl = _fresh(base_vl)
    cfg = _cfg(loss_type=loss_type, importance_sampling_level=level)
    reference_model = copy.deepcopy(vl.model)
    before = {n: p.detach().clone() for n, p in vl.model.named_parameters()}
    optimizer = torch.optim.SGD(vl.model.parameters(), lr=1.0)
    metrics, groups = grpo_step(vl, samples, cfg, engine=_engine(vl, cfg), optimizer=optimizer,
                                generator=torch.Generator().manual_seed(1), reward_fn=_text_reward,
                                grad_accum=accum)
    assert any(g.advantages.abs().sum() > 0 for g in groups)
    loss, grads = _reference(reference_model, groups, cfg, micro=[2, 1] if accum == 2 else None)
    assert metrics["loss"] == pytest.approx(loss, abs=1e-6)
    checked = 0
    for name, p in vl.model.named_parameters():
        update = before[name] - p.detach()
        expected = grads.get(name, torch.zeros_like(update)).float()
        torch.testing.assert_close(update, expected, atol=2e-6, rtol=2e-4, msg=name)
        checked += int(expected.abs().sum() > 0)
    assert checked > 10  # the comparison is not vacuous


def test_identical_rewards_give_zero_advantages_and_gradient(base_vl, samples):
    vl = _fresh(base_vl)
    cfg = _cfg()
    before = {n: p.detach().clone() for n, p in vl.model.named_parameters()}
    optimizer = torch.optim.SGD(vl.model.parameters(), lr=1.0)
    metrics, groups = grpo_step(vl, samples, cfg, engine=_engine(vl, cfg), optimizer=optimizer,
                                generator=torch.Generator().manual_seed(2),
                                reward_fn=lambda texts, sample: (torch.full((len(texts),), 0.7), {}))
    for g in groups:
        assert torch.equal(g.advantages, torch.zeros(G))
    assert metrics["grad_norm"] == 0.0 and metrics["loss"] == 0.0
    for name, p in vl.model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name


def test_step_with_pir_rewards_and_adamw_changes_parameters(base_vl, samples):
    vl = _fresh(base_vl)
    cfg = _cfg(optim=OptimConfig(lr=1e-2, warmup_steps=0))
    before = [p.detach().clone() for p in vl.model.parameters()]
    optimizer = torch.optim.AdamW(vl.model.parameters(), lr=1e-2)
    # the PIR reward of the random model is 0 everywhere; add a text-dependent term so advantages are not 0
    def reward(texts, sample):
        pir, stats = group_rewards(texts, sample, RewardConfig())
        return pir + _text_reward(texts, sample)[0], stats
    metrics, groups = grpo_step(vl, samples, cfg, engine=_engine(vl, cfg), optimizer=optimizer,
                                generator=torch.Generator().manual_seed(3), reward_fn=reward)
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, vl.model.parameters()))
    for key in ("loss", "reward_mean", "reward_std", "iou", "refusal_acc", "clip_region", "completion_len",
                "tokens_per_s", "samples_per_s", "time_rollout_s", "time_logprobs_s", "time_backward_s",
                "time_optimizer_s"):
        assert key in metrics, key
    assert metrics["relevant_fraction"] == pytest.approx(1 / 3)
    assert metrics["completion_len"] == pytest.approx(float(torch.cat([g.rollout.lengths for g in groups]).float().mean()))


def _spy(monkeypatch):
    calls = []
    real = grpo_rollouts.fused_grpo_loss

    def spy(hidden, weight, ids, old_logps, *args, **kwargs):
        calls.append({"old": old_logps, "ref": kwargs.get("ref_logps")})
        return real(hidden, weight, ids, old_logps, *args, **kwargs)

    monkeypatch.setattr(grpo_rollouts, "fused_grpo_loss", spy)
    return calls


@pytest.mark.parametrize("iterations", [1, 2])
def test_num_iterations_uses_rollout_logprobs_as_old(base_vl, samples, monkeypatch, iterations):
    calls = _spy(monkeypatch)
    vl = _fresh(base_vl)
    cfg = _cfg(num_iterations=iterations, optim=OptimConfig(lr=0.05, grad_clip=0.0, warmup_steps=0))
    optimizer = torch.optim.SGD(vl.model.parameters(), lr=0.05)
    metrics, groups = grpo_step(vl, samples[:2], cfg, engine=_engine(vl, cfg), optimizer=optimizer,
                                generator=torch.Generator().manual_seed(4), reward_fn=_text_reward)
    assert len(calls) == 2 * iterations
    if iterations == 1:
        assert all(c["old"] is None for c in calls)
        return
    for call, group in zip(calls, groups + groups):
        assert call["old"] is group.rollout.logprobs
    # first pass: old = sampling log-probs = current ones, ratio 1; second pass: the policy moved
    assert metrics["ratio"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["loss_last"] != pytest.approx(metrics["loss"], abs=1e-7)


def test_beta_uses_frozen_reference_model(base_vl, samples, monkeypatch):
    vl = _fresh(base_vl)
    cfg = _cfg(beta=0.5)
    ref_model = copy.deepcopy(vl.model).eval().requires_grad_(False)
    frozen = copy.deepcopy(ref_model)
    optimizer = torch.optim.SGD(vl.model.parameters(), lr=1.0)
    engine = _engine(vl, cfg)
    gen = torch.Generator().manual_seed(5)
    with pytest.raises(ValueError, match="ref_model"):
        grpo_step(vl, samples, cfg, engine=engine, optimizer=optimizer, reward_fn=_text_reward)
    grpo_step(vl, samples[:2], cfg, engine=engine, optimizer=optimizer, ref_model=ref_model, generator=gen,
              reward_fn=_text_reward)
    calls = _spy(monkeypatch)
    moved = copy.deepcopy(vl.model)
    metrics, groups = grpo_step(vl, samples[:2], cfg, engine=engine, optimizer=optimizer, ref_model=ref_model,
                                generator=gen, reward_fn=_text_reward)
    for call, group in zip(calls, groups):
        with torch.no_grad():
            expected = _plain_logps(frozen, group.sample.prompt, group.rollout.completion_ids, cfg.temperature)
        expected = (expected * group.rollout.completion_mask).float()
        torch.testing.assert_close(call["ref"], expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(ref_model.parameters(), frozen.parameters()):
        assert torch.equal(a, b)
    assert metrics["kl"] > 0  # the policy moved away from the reference in the first step
    # and the loss is TRL's with the KL term, from the policy as it was before this step
    ref = _pad_cat([c["ref"].double() for c in calls], max(g.rollout.completion_ids.shape[1] for g in groups))
    loss, _ = _reference(moved, groups, cfg, ref=ref)
    assert metrics["loss"] == pytest.approx(loss, abs=1e-5)


# ---------------------------------------------------------------- the loop: resume, ablation, command


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("grpo_data") / "synthetic")


def _train_cfg(data_root, out_dir, **kw) -> GRPOConfig:
    run = dict(out_dir=str(out_dir), steps=4, batch_size=2, log_every=1, save_every=0, progress=False)
    run.update(kw.pop("run", {}))
    return GRPOConfig(data=DataConfig(root=data_root, num_videos=6, num_frames=4, max_samples=6),
                      run=RunConfig(**run), num_generations=2, max_new_tokens=6, model=ModelConfig(name=tiny_name()),
                      optim=OptimConfig(lr=1e-2, warmup_steps=1), **kw)


def _lines(out_dir):
    from tempo_fast.train.log import read_metrics
    keep = ("step", "loss", "loss_last", "reward_mean", "reward_std", "grad_norm", "kl", "completion_len", "lr")
    return [{k: row.get(k) for k in keep} for row in read_metrics(os.path.join(out_dir, "metrics.jsonl"))]


def test_resume_gives_the_same_steps_as_an_uninterrupted_run(data_root, tmp_path):
    from safetensors.torch import load_file

    from tempo_fast.train.grpo import train_grpo
    straight = train_grpo(_train_cfg(data_root, tmp_path / "a", beta=0.1), reward_fn=_text_reward)
    train_grpo(_train_cfg(data_root, tmp_path / "b", beta=0.1, run={"stop_after": 2}), reward_fn=_text_reward)
    resumed = train_grpo(_train_cfg(data_root, tmp_path / "b", beta=0.1), reward_fn=_text_reward)
    a, b = _lines(tmp_path / "a"), _lines(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b
    assert len({r["reward_mean"] for r in a}) > 1 and any(r["grad_norm"] > 0 for r in a)  # not vacuous
    wa, wb = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pir_false_trains_on_relevant_samples_only(data_root, tmp_path):
    from tempo_fast.train.data import GroundingSamples, prepare_synthetic
    from tempo_fast.train.grpo import train_grpo, training_data_config
    cfg = _train_cfg(data_root, tmp_path / "n", pir=False, run={"steps": 3})
    _, records, facts = prepare_synthetic(cfg.data)
    counts = {pir: GroundingSamples(records["train"], None, training_data_config(dataclasses.replace(cfg, pir=pir)),
                                    facts=facts).counts() for pir in (True, False)}
    assert counts[True]["irrelevant"] + counts[True]["partial"] > 0
    assert counts[False] == {"relevant": 6, "irrelevant": 0, "partial": 0}
    train_grpo(cfg)
    from tempo_fast.train.log import read_metrics
    rows = read_metrics(tmp_path / "n" / "metrics.jsonl")
    assert len(rows) == 3 and all(r["relevant_fraction"] == 1.0 and r["refusal_acc"] is None for r in rows)


def test_grpo_command_starts_from_an_sft_checkpoint(base_vl, data_root, tmp_path):
    import json

    from safetensors.torch import load_file

    from tempo_fast.cli import main
    from tempo_fast.train.checkpoint import save_checkpoint
    # a checkpoint as SFT writes it, holding base_vl's sharpened head (the tiny preset's differs)
    init = save_checkpoint(tmp_path / "sft", step=7, model=base_vl, data_state={}, config={},
                           optimizer=torch.optim.AdamW(base_vl.model.parameters()), scheduler=None)
    out = tmp_path / "cmd"
    rc = main(["grpo", "--init-from", str(init), "--data-root", data_root, "--data-num-videos", "6",
               "--data-num-frames", "4", "--data-max-samples", "6", "--run-out-dir", str(out), "--run-steps", "1",
               "--run-batch-size", "1", "--num-generations", "2", "--max-new-tokens", "4", "--no-run-progress",
               "--loss-type", "dapo", "--optim-lr", "1e-9"])
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["loss_type"] == "dapo"
    head = load_file(out / "step_000001" / "model.safetensors")["lm_head.weight"]
    torch.testing.assert_close(head, base_vl.lm_head.weight.detach(), atol=1e-6, rtol=0)


def _launch(cfg: GRPOConfig, nproc: int) -> None:
    """Run this file's __main__ (train_grpo with _text_reward) under torch.distributed.run, one
    intra-op thread per process."""
    from tempo_fast.config import save_config
    config = save_config(cfg, cfg.run.out_dir + ".json")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc), __file__, str(config)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("checkpoint:") == 1  # printed by rank 0 only


def test_two_gloo_processes_match_one(data_root, tmp_path):
    """2 gloo processes x 1 prompt per step draw the same rollouts as 1 process x 2 prompts (a
    prompt's generator follows from its place in the sample stream, not from the rank), log the
    same whole-batch metrics, end with the same weights and write one checkpoint.

    Tolerance: none but for the logged loss. Both runs are launched the same way, one intra-op
    thread per process (pytest's own process, with its thread count, rounds CPU kernels
    differently), and every prompt's rollout, forward and backward is the same batch-1 computation
    in both; one process accumulates g0/2 + g1/2, two all-reduce (g0 + g1)/2, equal in IEEE
    arithmetic since halving is exact. So completions, gradients, AdamW steps and weights are
    bitwise equal. Only the logged loss is summed differently (fp32 accumulation vs an fp64
    all-reduce mean): a few fp32 ulps, rel 1e-6. A tolerance on the weights would be no easier to
    meet: once the rounding differs at all, AdamW's m / sqrt(v) turns rounding noise in gradients
    that are 0 in exact arithmetic (the key biases, by softmax's shift invariance) into steps of up
    to lr, and different samples follow.
    """
    from safetensors.torch import load_file

    from tempo_fast.train.log import read_metrics
    steps = 3
    # beta > 0: the on-policy GRPO loss is -mean(advantage) = 0; the KL term makes it > 0 after step 1
    for name, nproc in (("one", 1), ("two", 2)):
        run = {"steps": steps, "batch_size": 2 // nproc, "device": "cpu"}
        _launch(_train_cfg(data_root, tmp_path / name, beta=0.1, run=run), nproc)
    final = f"step_{steps:06d}"
    assert sorted(p.name for p in (tmp_path / "two").glob("step_*")) == [final]
    timing = ("time", "tokens_per_s", "samples_per_s")
    one, two = [[{k: v for k, v in row.items() if not k.startswith(timing)}
                 for row in read_metrics(tmp_path / name / "metrics.jsonl")] for name in ("one", "two")]
    assert [r["step"] for r in two] == list(range(1, steps + 1))
    assert len({r["reward_mean"] for r in one}) > 1 and all(r["grad_norm"] > 0 for r in one)  # not vacuous
    assert all(r["loss"] > 0 and r["kl"] > 0 for r in one[1:])
    for a, b in zip(one, two):
        for key in ("loss", "loss_last"):
            assert b.pop(key) == pytest.approx(a.pop(key), rel=1e-6, abs=1e-9)
        assert b == a  # rewards, relevant fraction, lengths, clip fractions, ratio, kl, grad_norm, lr
    w1 = load_file(tmp_path / "one" / final / "model.safetensors")
    w2 = load_file(tmp_path / "two" / final / "model.safetensors")
    assert w1.keys() == w2.keys()
    for name in w1:
        assert torch.equal(w2[name], w1[name]), name


if __name__ == "__main__":  # one process of test_two_gloo_processes_match_one, under torch.distributed.run
    from tempo_fast.config import config_from_dict, load_config_file
    from tempo_fast.train.dist import cleanup
    from tempo_fast.train.grpo import train_grpo
    try:
        train_grpo(config_from_dict(GRPOConfig, load_config_file(sys.argv[1])), reward_fn=_text_reward)
    finally:
        cleanup()
