"""One PIR-GRPO training step (`grpo_step`), for a batch of prompts (relevant, irrelevant and
partially irrelevant samples in the configured mix):

    rollout      G completions per prompt from the RolloutEngine (B prompts x G per forward),
                 sampled at cfg.temperature; their log-probs come from the sampling passes
    rewards      tempo_fast.rewards.pir_reward (IoU for relevant samples, 1 for refusing the
                 others, + format_weight for a well-formed answer), one group of G per prompt
    advantages   tempo_fast.ops.group_advantages(rewards, G, scale=cfg.scale_rewards)
    reference    when beta > 0: the frozen initial model's per-token log-probs (no_grad,
                 fused_linear_logprobs from its hidden states)
    loss         per prompt, the policy's final hidden states at the completion positions
                 (teacher-forced, the prompt prefilled once for its G completions) ->
                 tempo_fast.ops.fused_grpo_loss with the LM head's weight
    update       backward per prompt (gradient accumulation over the batch), clip, AdamW, cosine
(the pieces: tempo_fast.train.grpo_rollouts).

Choices and simplifications (as in TRL's GRPOTrainer unless said):
- num_iterations == 1: old_logps=None (on-policy; the ratio is exp(logp - logp.detach()) = 1),
  as TRL does. num_iterations > 1: the loss/optimizer step is repeated num_iterations times on
  the same rollouts with old_logps fixed to the rollout's sampling log-probs (TRL recomputes them
  with an extra forward pass; on CPU in fp32 they agree to ~1e-6, in bf16 they differ slightly).
- Loss normalisation over a batch of P prompts, each computed separately: grpo and dr_grpo are
  means over sequences, so the batch loss is the mean of the P per-prompt losses (dr_grpo with
  max_completion_length = max_new_tokens, as TRL); bnpo and dapo divide the masked token sum by
  the batch's tokens (bnpo: the micro-batch's; dapo: the whole step's on all processes, TRL's
  num_items_in_batch). Clip/ratio/KL stats are averaged over prompts.
- One scheduler step per optimizer step, so a run makes steps * num_iterations of them.
- Logged metrics: loss, rewards, IoU, refusal accuracy, relevant fraction, lengths, clip fractions,
  ratio and KL are the whole batch's (all processes); grad_norm is of the averaged gradient;
  timings and throughputs are rank 0's.
"""
from __future__ import annotations

import math
import time

import torch

from tempo_fast.rewards import RewardConfig
from tempo_fast.train.grpo_rollouts import RELEVANT, Group, collect_groups, group_loss, reference_logprobs
from tempo_fast.train.sft import autocast

LOSS_METHOD = "tempo_grpo_group_loss"  # group_loss bound to the model, registered with FSDP2


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def grpo_step(vl, samples, cfg, *, engine, optimizer, scheduler=None, ref_model=None, generator=None,
              grad_accum: int = 1, world_size: int = 1, reward_fn=None, all_reduce=None, gather=None,
              reduce_grads=None) -> tuple[dict, list[Group]]:
    """One PIR-GRPO step on `samples` (a list of Samples): rollouts, rewards, advantages, optional
    reference log-probs, then num_iterations x (loss, backward, clip, optimizer step).

    vl: the VLModel; vl.model samples and is trained (plain, or FSDP2-sharded with the group loss
    registered as a forward method by `train_grpo`). ref_model: the frozen reference (needed when
    cfg.beta > 0). generator: one torch.Generator for all rollouts, or one per sample. grad_accum:
    the batch is split into this many micro-batches of whole groups. world_size / all_reduce (sums
    a tensor over processes, returns the sum) / gather (returns the list of every process's
    object) / reduce_grads (averages the gradients over processes, for replicated models): None in
    a single process; every process must hold as many samples.
    reward_fn(texts, sample) -> (rewards [G], stats) replaces the PIR rewards when given.
    Returns (metrics, groups); metrics["loss"] is the first iteration's loss (before any update
    of this step), loss_last the last one's.
    """
    if cfg.beta > 0 and ref_model is None:
        raise ValueError(f"grpo_step: beta={cfg.beta} needs ref_model (the frozen reference)")
    model = vl.model
    loss_fn = getattr(model, LOSS_METHOD, None) or (lambda *a, **k: group_loss(model, *a, **k))
    device = vl.device
    reward_config = RewardConfig(format_weight=cfg.format_weight)

    model.eval()
    _sync(device)
    t0 = time.perf_counter()
    with autocast(device):
        groups = collect_groups(engine, samples, cfg.num_generations, reward_config,
                                scale_rewards=cfg.scale_rewards, generator=generator, reward_fn=reward_fn)
    _sync(device)
    t1 = time.perf_counter()
    if cfg.beta > 0:
        for group in groups:
            with autocast(device):
                group.ref_logps = reference_logprobs(ref_model, group, cfg.temperature)
    _sync(device)
    t2 = time.perf_counter()

    lr = optimizer.param_groups[0]["lr"]
    micro = _split(groups, grad_accum)
    tokens = torch.tensor([float(g.rollout.completion_mask.sum()) for g in groups], dtype=torch.float64)
    step_tokens = tokens.sum().to(device)
    if all_reduce is not None:
        step_tokens = all_reduce(step_tokens)
    model.train()
    losses, stats_sum, backward_s, optimizer_s, grad_norm = [], {}, 0.0, 0.0, torch.zeros(())
    for iteration in range(cfg.num_iterations):
        tb = time.perf_counter()
        total = torch.zeros((), device=device)
        for part in micro:
            part_tokens = float(sum(g.rollout.completion_mask.sum() for g in part))
            for group in part:
                # dapo: the whole step's tokens (gradients are averaged over processes); bnpo: the micro-batch's
                items = float(step_tokens) / world_size if cfg.loss_type == "dapo" else part_tokens
                with autocast(device):
                    loss, stats = loss_fn(group, cfg, use_old_logps=cfg.num_iterations > 1, num_items=items)
                if cfg.loss_type == "dapo":
                    scaled = loss
                else:
                    scaled = (loss if cfg.loss_type == "bnpo" else loss / len(part)) / len(micro)
                scaled.backward()
                total += scaled.detach()
                if iteration == 0:
                    for key, value in stats.items():
                        stats_sum[key] = stats_sum.get(key, 0.0) + float(value) / len(groups)
        _sync(device)
        to = time.perf_counter()
        if reduce_grads is not None:
            reduce_grads()
        params = [p for p in model.parameters() if p.requires_grad]
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t3 = time.perf_counter()
        backward_s += to - tb
        optimizer_s += t3 - to
        losses.append(float(total))
    model.eval()

    metrics = _step_metrics(groups, gather)
    if all_reduce is not None:  # means over processes of means over as many groups: the whole batch's
        keys = sorted(stats_sum)
        local = torch.tensor(losses + [stats_sum[k] for k in keys], dtype=torch.float64, device=device)
        means = (all_reduce(local) / world_size).tolist()
        losses, stats_sum = means[:len(losses)], dict(zip(keys, means[len(losses):]))
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    metrics.update(loss=losses[0], loss_last=losses[-1], grad_norm=float(grad_norm), **stats_sum)
    rollout_s, ref_s = t1 - t0, t2 - t1
    step_s = rollout_s + ref_s + backward_s + optimizer_s
    completion_tokens = float(tokens.sum())
    metrics.update(time_rollout_s=rollout_s, time_logprobs_s=ref_s, time_backward_s=backward_s,
                   time_optimizer_s=optimizer_s, time_step_s=step_s,
                   tokens_per_s=completion_tokens / max(step_s, 1e-9),
                   samples_per_s=len(groups) * cfg.num_generations / max(step_s, 1e-9))
    metrics["lr"] = lr
    return metrics, groups


def _split(groups: list, parts: int) -> list:
    if parts < 1:
        raise ValueError(f"grpo_step: grad_accum must be >= 1, got {parts}")
    parts = min(parts, len(groups))
    size = math.ceil(len(groups) / parts)
    return [groups[i:i + size] for i in range(0, len(groups), size)]


def _step_metrics(groups: list, gather=None) -> dict:
    """Reward, IoU, refusal, relevance and length metrics of the groups of every process (in rank
    order; `gather`: see grpo_step)."""
    mine = {"rewards": torch.cat([g.rewards.cpu() for g in groups]),
            "lengths": torch.cat([g.rollout.lengths.float().cpu() for g in groups]),
            "iou": [g.stats["iou"].cpu() for g in groups if "iou" in g.stats],
            "refused": [g.stats["refused"].cpu() for g in groups if "refused" in g.stats],
            "relevant": sum(g.sample.relevance == RELEVANT for g in groups), "groups": len(groups)}
    parts = [mine] if gather is None else gather(mine)
    rewards = torch.cat([p["rewards"] for p in parts])
    lengths = torch.cat([p["lengths"] for p in parts])
    ious = [t for p in parts for t in p["iou"]]
    refusals = [t for p in parts for t in p["refused"]]
    return {
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "iou": float(torch.cat(ious).mean()) if ious else math.nan,
        "refusal_acc": float(torch.cat(refusals).mean()) if refusals else math.nan,
        "relevant_fraction": sum(p["relevant"] for p in parts) / sum(p["groups"] for p in parts),
        "completion_len": float(lengths.mean()),
        "completion_len_max": float(lengths.max()),
    }
