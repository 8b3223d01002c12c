"""PIR-GRPO: the reinforcement-learning loop after the SFT warm-up (`train_grpo`, the
`tempo-fast grpo` command). The step is tempo_fast.train.grpo_step, its pieces (rollouts,
rewards, the policy forward, the loss) tempo_fast.train.grpo_rollouts; their names are importable
from here too.

Single device and torchrun run the same code:

    tempo-fast grpo --init-from runs/sft/step_000100 --run-out-dir runs/grpo
    torchrun --nproc-per-node 2 -m tempo_fast grpo --init-from runs/sft/step_000100

- The reference model (beta > 0) is a deep copy taken before sharding, kept whole on every process.
- Each prompt's rollouts draw from their own torch.Generator, seeded by the run's seed and the
  prompt's place in the sample stream (`rollout_generator`), whatever process takes it: n
  processes sample exactly what one process with the whole batch would, and a resumed run (the
  sample order is in the checkpoint) what an uninterrupted one would.

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

import torch

from tempo_fast.train.grpo_rollouts import (RELEVANT, Group, collect_groups, completion_hidden,  # noqa: F401
                                            group_loss, group_rewards, reference_logprobs, rollout_generator)
from tempo_fast.train.grpo_step import LOSS_METHOD, grpo_step  # noqa: F401

__all__ = ["Group", "LOSS_METHOD", "RELEVANT", "collect_groups", "completion_hidden", "group_loss", "group_rewards",
           "grpo_step", "reference_logprobs", "rollout_generator", "setup_grpo", "train_grpo", "train_step",
           "training_data_config"]


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
