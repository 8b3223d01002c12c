"""PIR-GRPO: the reinforcement-learning loop after the SFT warm-up.

One training step (`grpo_step`), for a batch of prompts (relevant, irrelevant and partially
irrelevant samples in the configured mix):

    rollout      G completions per prompt from the RolloutEngine (one shared prefill per prompt),
                 sampled at cfg.temperature; their log-probs come from the sampling passes
    rewards      tempo_fast.rewards.pir_reward (IoU for relevant samples, 1 for refusing the
                 others, + format_weight for a well-formed answer), one group of G per prompt
    advantages   tempo_fast.ops.group_advantages(rewards, G, scale=cfg.scale_rewards)
    reference    when beta > 0: the frozen initial model's per-token log-probs (no_grad,
                 fused_linear_logprobs from its hidden states)
    loss         per prompt, the policy's final hidden states at the completion positions
                 (teacher-forced) -> tempo_fast.ops.fused_grpo_loss with the LM head's weight:
                 the [G, T, V] logits never exist
    update       backward per prompt (gradient accumulation over the batch), clip, AdamW, cosine

The policy forward shares the prompt too: the prompt (video + query) is prefilled once at batch 1
WITH autograd, its key/value cache is expanded (a view, no copy) to the G completions, and the
completions run as one [G, T-1] batch on top of it. Backward sums the G completions' gradients
into the one prompt pass, exactly as if the prompt had been repeated G times, for 1/G of the
prompt's forward and backward work (vision encoder included). With activation checkpointing,
transformers turns the cache off inside checkpointed layers, so the prompt is then repeated G
times in one batch instead (`completion_hidden(share_prefill=False)`, same result).

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
- The reference model is a deep copy taken before sharding, kept whole on every process.
- Each prompt's rollouts draw from their own torch.Generator, seeded by the run's seed and the
  prompt's place in the sample stream (`rollout_generator`), whatever process takes it: n
  processes sample exactly what one process with the whole batch would, and a resumed run (the
  sample order is in the checkpoint) what an uninterrupted one would.
- Logged metrics: loss, rewards, IoU, refusal accuracy, relevant fraction, lengths, clip fractions,
  ratio and KL are the whole batch's (all processes); grad_norm is of the averaged gradient;
  timings and throughputs are rank 0's.

Single device and torchrun run the same code:

    tempo-fast grpo --init-from runs/sft/step_000100 --run-out-dir runs/grpo
    torchrun --nproc-per-node 2 -m tempo_fast grpo --init-from runs/sft/step_000100

Several processes: each takes its share of every batch (tempo_fast.train.sft.micro_batches) and
gradients are averaged over processes. On CUDA the model is FSDP2-sharded (tempo_fast.train.dist
.apply_fsdp) and `group_loss` - which runs the base model twice and reads the LM head's weight
outside `forward` - is bound to the root and registered with `register_fsdp_forward_method`, so
the root's parameters are gathered around it and its gradients reduce-scattered. On CPU (gloo)
the model is replicated and the gradients are all-reduced in one flat buffer before clipping
(DDP's result; a DDP wrapper would only see the rollout's and the loss's inner forwards).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from tempo_fast.ops import fused_grpo_loss, fused_linear_logprobs, group_advantages
from tempo_fast.rewards import RewardConfig, iou_reward, parse_answer, pir_reward
from tempo_fast.train.sft import autocast

RELEVANT = "relevant"
LOSS_METHOD = "tempo_grpo_group_loss"  # group_loss bound to the model, registered with FSDP2


@dataclass
class Group:
    """The G rollouts of one prompt with their rewards and advantages."""

    sample: object             # a tempo_fast.train.data.Sample (prompt, record, relevance, target)
    rollout: object            # the tempo_fast.rollout.Rollout
    rewards: torch.Tensor      # [G] float32 PIR rewards
    advantages: torch.Tensor   # [G] float32, on the model's device
    ref_logps: torch.Tensor | None = None  # [G, T] reference log-probs when beta > 0
    stats: dict = field(default_factory=dict)  # iou (relevant) or refused (others), per completion


# ---------------------------------------------------------------- rollouts and rewards


def group_rewards(texts: list, sample, reward_config: RewardConfig) -> tuple[torch.Tensor, dict]:
    """PIR rewards `[G]` of the completions `texts` of `sample`, and per-completion iou / refused."""
    relevance = sample.relevance
    windows = list(sample.record.windows) if relevance == RELEVANT else []
    duration = sample.record.duration or float(sample.prompt.duration)  # the annotation's, else the video's
    rewards = pir_reward(texts, windows, relevance, duration, reward_config)
    if relevance == RELEVANT:
        stats = {"iou": iou_reward(texts, windows, duration)}
    else:
        stats = {"refused": torch.tensor([float(parse_answer(t).refused) for t in texts])}
    return rewards, stats


def rollout_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator the rollouts of a run's `index`-th sample (its place in the sample
    stream, `SampleOrder.drawn`) draw from: a function of (seed, index) only, not of the rank."""
    import numpy as np

    mixed = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))


def collect_groups(engine, samples, num_generations: int, reward_config: RewardConfig, *,
                   scale_rewards: str = "group", generator=None, reward_fn=None) -> list[Group]:
    """Rollouts, rewards and advantages for each sample. `generator`: one torch.Generator that the
    samples draw from in turn, or a list of one per sample (None: torch's default).
    `reward_fn(texts, sample) -> ([G], stats)` replaces the PIR rewards when given (e.g. a custom
    reward)."""
    reward_fn = reward_fn or (lambda texts, sample: group_rewards(texts, sample, reward_config))
    generators = list(generator) if isinstance(generator, (list, tuple)) else [generator] * len(samples)
    if len(generators) != len(samples):
        raise ValueError(f"collect_groups: {len(generators)} generators for {len(samples)} samples "
                         "(pass one generator, or one per sample)")
    groups = []
    for sample, gen in zip(samples, generators):
        rollout = engine.generate(sample.prompt, num_generations, generator=gen)
        rewards, stats = reward_fn(rollout.texts, sample)
        rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(num_generations)
        advantages = group_advantages(rewards, num_generations, scale=scale_rewards)
        groups.append(Group(sample, rollout, rewards, advantages.to(rollout.completion_ids.device), stats=stats))
    return groups


# ---------------------------------------------------------------- policy forward


def completion_hidden(model, prompt, completion_ids: torch.Tensor, *, share_prefill: bool = True) -> torch.Tensor:
    """Final hidden states `[G, T, H]` that predict `completion_ids` `[G, T]` after `prompt`.

    Position t of the result is the state after prompt + completion[:t] (teacher forcing): the
    prompt's last state, then the states of completion[:, :T-1] at rotary ids next_position + t on
    all three axes (the ids the rollout engine used). `model` is a Qwen*ForConditionalGeneration;
    its base `model.model` gives hidden states after the final norm, without logits.
    """
    from transformers import DynamicCache

    from tempo_fast.model import forward_kwargs

    base = model.model
    num, width = completion_ids.shape
    length = prompt.input_ids.shape[1]
    device = prompt.input_ids.device
    tail = (prompt.next_position + torch.arange(width - 1, device=device)).view(1, 1, -1).expand(3, num, -1)
    if share_prefill:
        cache = DynamicCache(config=model.config)
        last = base(**forward_kwargs(prompt), past_key_values=cache, use_cache=True).last_hidden_state[:, -1:]
        last = last.expand(num, 1, last.shape[-1])
        if width == 1:
            return last
        for layer in cache.layers:  # the batch-1 prompt cache viewed as G rows; autograd sums them back
            layer.keys = layer.keys.expand(num, -1, -1, -1)
            layer.values = layer.values.expand(num, -1, -1, -1)
        rest = base(input_ids=completion_ids[:, :-1], position_ids=tail, past_key_values=cache,
                    use_cache=True).last_hidden_state
        return torch.cat([last, rest], dim=1)
    ids = torch.cat([prompt.input_ids.expand(num, -1), completion_ids[:, :-1]], dim=1)
    positions = torch.cat([prompt.position_ids.expand(-1, num, -1), tail], dim=-1)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions,
                  pixel_values_videos=prompt.pixel_values_videos.repeat(num, 1),
                  video_grid_thw=prompt.video_grid_thw.repeat(num, 1))
    if prompt.second_per_grid_ts is not None:
        kwargs["second_per_grid_ts"] = prompt.second_per_grid_ts.repeat(num)
    return base(**kwargs, use_cache=False).last_hidden_state[:, length - 1:]


def _shares_prefill(model) -> bool:
    # transformers disables the KV cache inside checkpointed layers while training
    return not (model.training and any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()))


@torch.no_grad()
def reference_logprobs(ref_model, group: Group, temperature: float) -> torch.Tensor:
    """The frozen reference model's log-probs `[G, T]` of the group's completions (0 on padding)."""
    rollout = group.rollout
    hidden = completion_hidden(ref_model, group.sample.prompt, rollout.completion_ids)
    ids = torch.where(rollout.completion_mask.bool(), rollout.completion_ids, -1)
    weight = ref_model.get_output_embeddings().weight
    logps = fused_linear_logprobs(hidden.reshape(-1, hidden.shape[-1]), weight, ids.reshape(-1),
                                  temperature=temperature)
    return logps.view_as(rollout.logprobs)


def group_loss(model, group: Group, cfg, *, use_old_logps: bool, num_items=None):
    """GRPO loss `(loss, stats)` of one group under the policy `model` (differentiable)."""
    rollout = group.rollout
    hidden = completion_hidden(model, group.sample.prompt, rollout.completion_ids,
                               share_prefill=_shares_prefill(model))
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    if weight.dtype != hidden.dtype:  # bf16 autocast: the head runs in the activations' dtype, as autocast would
        weight = weight.to(hidden.dtype)
        bias = None if bias is None else bias.to(hidden.dtype)
    loss_type, extra = cfg.loss_type, {}
    if loss_type == "bnpo":  # normalised by the micro-batch's tokens, not this group's
        loss_type, extra["num_items_in_batch"] = "dapo", num_items
    elif loss_type == "dapo":
        extra["num_items_in_batch"] = num_items
    elif loss_type == "dr_grpo":
        extra["max_completion_length"] = cfg.max_new_tokens
    return fused_grpo_loss(
        hidden, weight, rollout.completion_ids, rollout.logprobs if use_old_logps else None,
        group.advantages, rollout.completion_mask, bias=bias,
        temperature=cfg.temperature, ref_logps=group.ref_logps, beta=cfg.beta, loss_type=loss_type,
        epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_high, delta=cfg.delta,
        importance_sampling_level=cfg.importance_sampling_level, **extra)


# ---------------------------------------------------------------- one step


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


# ---------------------------------------------------------------- the training loop


def _gather_objects(obj, world: int) -> list:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _grad_averager(model, world: int):
    """Averages the gradients of a replicated model over processes (one flat all-reduce)."""
    import torch.distributed as dist

    def reduce_grads() -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    return reduce_grads


def training_data_config(cfg):
    """The DataConfig samples are built with: cfg.data, without PIR samples when cfg.pir is False
    (the ablation: relevant samples only)."""
    if cfg.pir:
        return cfg.data
    return dataclasses.replace(cfg.data, irrelevant_fraction=0.0, partial_fraction=0.0)


def setup_grpo(cfg, *, reward_fn=None) -> dict:
    """Everything the loop needs: process group, samples, policy, reference, optimizer, resume point."""
    import types

    from tempo_fast.model import load_model
    from tempo_fast.rollout import RolloutEngine, SamplingConfig
    from tempo_fast.train.checkpoint import latest_checkpoint, load_checkpoint
    from tempo_fast.train.data import GroundingSamples, SampleOrder, pir_records
    from tempo_fast.train.dist import all_reduce_sum, apply_fsdp
    from tempo_fast.train.loop import start_run
    from tempo_fast.train.sft import DTYPES, build_optimizer, prepare_model

    info, out, records, facts = start_run(cfg, "train_grpo")
    data_cfg = training_data_config(cfg)
    source = cfg.init_from or cfg.model.name
    dtype = DTYPES[cfg.model.dtype] if cfg.model.dtype else torch.float32
    vl = load_model(source, device=info.device, dtype=dtype)
    prepare_model(vl, cfg.model)
    ref_model = copy.deepcopy(vl.model).eval().requires_grad_(False) if cfg.beta > 0 else None
    reduce_grads = None
    if info.world_size > 1 and info.device.type == "cuda":
        from torch.distributed.fsdp import register_fsdp_forward_method

        apply_fsdp(vl.model)
        # the loss reads the LM head's weight outside forward: run it as a forward of the sharded root
        setattr(vl.model, LOSS_METHOD, types.MethodType(group_loss, vl.model))
        register_fsdp_forward_method(vl.model, LOSS_METHOD)
    elif info.world_size > 1:
        reduce_grads = _grad_averager(vl.model, info.world_size)
    samples = GroundingSamples(records[cfg.data.split], vl, data_cfg, facts=facts, device=info.device)
    optimizer, scheduler = build_optimizer(vl.model, cfg.optim, cfg.run.steps * cfg.num_iterations)
    order = SampleOrder(len(samples), cfg.run.seed)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              top_k=cfg.top_k)
    start, checkpoint = 0, latest_checkpoint(out) if cfg.run.resume else None
    if checkpoint is not None:
        restored = load_checkpoint(checkpoint, model=vl, optimizer=optimizer, scheduler=scheduler)
        start = restored["step"]
        order.load_state_dict(restored["data_state"])  # the rollout generators follow from it
        if info.is_main:
            print(f"resumed from {checkpoint} at step {start}", flush=True)
    eval_records = pir_records(records.get("val", []), cfg.data, facts) if cfg.run.eval_every else []
    return {"cfg": cfg, "info": info, "vl": vl, "ref_model": ref_model, "samples": samples, "order": order,
            "optimizer": optimizer, "scheduler": scheduler, "engine": RolloutEngine(vl, sampling),
            "start": start, "out": out, "checkpoint": checkpoint, "eval_records": eval_records,
            "reward_fn": reward_fn, "reduce_grads": reduce_grads,
            "all_reduce": all_reduce_sum if info.world_size > 1 else None,
            "gather": (lambda obj: _gather_objects(obj, info.world_size)) if info.world_size > 1 else None}


def train_step(state: dict) -> dict:
    """One GRPO step on this process's share of the next batch; returns its metrics."""
    from tempo_fast.train.sft import micro_batches, rank_share

    cfg, info, order = state["cfg"], state["info"], state["order"]
    first = order.drawn  # the stream index of this step's first sample
    parts = micro_batches(order, info.rank, info.world_size, cfg.run.batch_size, cfg.run.grad_accum)
    places = rank_share(range(first, order.drawn), info.rank, info.world_size, cfg.run.batch_size,
                        cfg.run.grad_accum)
    batch = [state["samples"][i] for part in parts for i in part]
    generators = [rollout_generator(cfg.run.seed, k) for part in places for k in part]
    metrics, _ = grpo_step(state["vl"], batch, cfg, engine=state["engine"], optimizer=state["optimizer"],
                           scheduler=state["scheduler"], ref_model=state["ref_model"], generator=generators,
                           grad_accum=len(parts), world_size=info.world_size, reward_fn=state["reward_fn"],
                           all_reduce=state["all_reduce"], gather=state["gather"],
                           reduce_grads=state["reduce_grads"])
    return metrics


def _save(state: dict, step: int):
    from tempo_fast.train.checkpoint import save_checkpoint

    cfg = state["cfg"]
    return save_checkpoint(state["out"], step=step, model=state["vl"], optimizer=state["optimizer"],
                           scheduler=state["scheduler"], data_state=state["order"].state_dict(), config=cfg,
                           keep=cfg.run.keep_checkpoints)


def _evaluate(state: dict) -> dict:
    from tempo_fast.train.evaluate import evaluate_grounding

    with torch.no_grad():
        metrics = evaluate_grounding(state["vl"], state["eval_records"], data_cfg=state["cfg"].data,
                                     max_new_tokens=state["cfg"].max_new_tokens)
    return {f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


def train_grpo(cfg, *, reward_fn=None):
    """Run PIR-GRPO as `cfg` (a GRPOConfig) says, resuming from run.out_dir when allowed; returns the
    last checkpoint folder. reward_fn: see `grpo_step` (None: the PIR rewards).

    metrics.jsonl per logged step: loss (loss_last after num_iterations passes), reward_mean/std,
    iou (relevant samples), refusal_acc (irrelevant + partial), relevant_fraction, clip_low/high/
    region, ratio, kl (beta > 0), grad_norm, lr, completion_len(_max), tokens_per_s (completion
    tokens), samples_per_s (completions), time_rollout_s, time_logprobs_s (reference),
    time_backward_s (policy forward + backward), time_optimizer_s, time_step_s; eval_* when
    run.eval_every is set.
    """
    from tempo_fast.train.loop import run_steps

    return run_steps(setup_grpo(cfg, reward_fn=reward_fn), cfg.run, name="grpo", train_step=train_step,
                     evaluate=_evaluate, save=_save, eval_on_every_rank=True,
                     postfix=lambda m: {"reward": f"{m['reward_mean']:.3f}", "iou": f"{m['iou']:.3f}",
                                        "refusal": f"{m['refusal_acc']:.2f}"})
