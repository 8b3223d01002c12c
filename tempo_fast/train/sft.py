"""Supervised fine-tuning on teacher-forced grounding answers (the warm-up before PIR-GRPO).

Single device:   tempo-fast sft --run-out-dir runs/sft --run-steps 100
Several:         torchrun --nproc_per_node 8 -m tempo_fast sft --run-out-dir runs/sft
(the same loop, FSDP2-sharded: NCCL on CUDA, gloo on CPU; see tempo_fast.train.dist).

Each sample is its prompt (video in the ETA layout + query) followed by its target answer
(`Sample.target`, e.g. `<answer>2.5 to 6.0</answer>` or `<answer>none</answer>`) and `<|im_end|>`.
The loss is -mean log p(answer token) over the answer and im_end tokens of the whole optimizer
step (all micro-batches, all ranks), computed by `tempo_fast.ops.fused_linear_logprobs` from the
final (normed) hidden states at the positions that predict them: the model runs with
`logits_to_keep=1`, so no [tokens, vocab] logits exist. Samples of a micro-batch are right-padded
into one forward (their videos concatenated as transformers does); answer tokens get text rotary
ids continuing from the prompt's `next_position`.

Optimizer: AdamW over the trainable parameters (decay on matrices only), linear warm-up then
cosine decay to `lr * min_lr_ratio`, gradient clipping. On CUDA the forward runs under bf16
autocast with fp32 master weights. Checkpoints (tempo_fast.train.checkpoint) hold everything the
next step depends on - weights, AdamW moments, schedule, sample order, RNG - so a resumed run
gives the same losses as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from tempo_fast.train.config import SFTConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def target_ids(vl, target: str) -> list[int]:
    """Token ids of the answer text followed by <|im_end|> (what the loss is on)."""
    ids = vl.tokenizer(target, add_special_tokens=False)["input_ids"]
    end = vl.tokenizer.convert_tokens_to_ids("<|im_end|>")
    if end is None or end == vl.tokenizer.unk_token_id:
        raise ValueError("target_ids: the tokenizer has no <|im_end|> token")
    return list(ids) + [int(end)]


def collate(samples, vl) -> dict:
    """Right-padded batch of prompt + answer sequences with the loss targets.

    Returns input_ids / attention_mask [B, L], position_ids [3, B, L], the videos concatenated
    (pixel_values_videos, video_grid_thw, second_per_grid_ts) and labels [B, L]: at position t the
    id of the answer token at t+1, -1 elsewhere. `n_tokens`: answer tokens in the batch.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    seqs, positions, labels = [], [], []
    for sample in samples:
        prompt = sample.prompt
        answer = torch.tensor(target_ids(vl, sample.target), dtype=torch.long, device=prompt.input_ids.device)
        n_prompt, n_answer = prompt.length, len(answer)
        seqs.append(torch.cat([prompt.input_ids[0], answer]))
        text_pos = (prompt.next_position + torch.arange(n_answer, device=answer.device)).expand(3, n_answer)
        positions.append(torch.cat([prompt.position_ids[:, 0], text_pos], dim=1))
        label = torch.full((n_prompt + n_answer,), -1, dtype=torch.long, device=answer.device)
        label[n_prompt - 1:n_prompt + n_answer - 1] = answer
        labels.append(label)
    length = max(len(s) for s in seqs)
    batch_size = len(samples)
    device = seqs[0].device
    input_ids = torch.full((batch_size, length), vl.pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long, device=device)
    position_ids = torch.zeros((3, batch_size, length), dtype=torch.long, device=device)
    label_ids = torch.full((batch_size, length), -1, dtype=torch.long, device=device)
    for b, (seq, pos, label) in enumerate(zip(seqs, positions, labels)):
        n = len(seq)
        input_ids[b, :n], attention_mask[b, :n], position_ids[:, b, :n], label_ids[b, :n] = seq, 1, pos, label
    prompts = [s.prompt for s in samples]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
             "pixel_values_videos": torch.cat([p.pixel_values_videos for p in prompts]),
             "video_grid_thw": torch.cat([p.video_grid_thw for p in prompts]),
             "labels": label_ids, "n_tokens": int((label_ids >= 0).sum()), "n_seq_tokens": int(attention_mask.sum())}
    if prompts[0].second_per_grid_ts is not None:
        batch["second_per_grid_ts"] = torch.cat([p.second_per_grid_ts.reshape(-1) for p in prompts])
    return batch


def final_hidden(module, batch) -> torch.Tensor:
    """The final normed hidden states [B, L, H] of `module` (the model, FSDP2-sharded or not)."""
    kwargs = {k: v for k, v in batch.items() if k not in ("labels", "n_tokens", "n_seq_tokens")}
    # logits_to_keep=1: the LM head runs on one position only; hidden_states[-1] is the output of the
    # final norm (transformers ties it to last_hidden_state), which the fused op turns into log-probs
    out = module(**kwargs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1]


def sft_loss(vl, batch, *, module=None, reduction: str = "mean") -> tuple[torch.Tensor, int]:
    """(-mean (or -sum) log-prob of the answer tokens, number of answer tokens) of a `collate` batch.

    module: what to run the forward through (default `vl.model`).
    """
    from tempo_fast.ops import fused_linear_logprobs

    if reduction not in ("mean", "sum"):
        raise ValueError(f"sft_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    hidden = final_hidden(vl.model if module is None else module, batch)
    labels = batch["labels"]
    keep = labels >= 0
    weight = vl.lm_head.weight
    h = hidden[keep]
    if h.dtype != weight.dtype:  # bf16 autocast: run the LM head in the activations' dtype, as autocast would
        weight = weight.to(h.dtype)
    bias = getattr(vl.lm_head, "bias", None)
    logps = fused_linear_logprobs(h, weight, labels[keep], bias=bias)
    total = -logps.sum()
    n = int(keep.sum())
    return (total / max(n, 1) if reduction == "mean" else total), n


def lr_factor(step: int, optim_cfg, total_steps: int) -> float:
    """Multiplier of the peak lr after `step` optimizer steps: linear warm-up, cosine to min_lr_ratio."""
    warmup = optim_cfg.warmup_steps
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = optim_cfg.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(module: torch.nn.Module, optim_cfg, total_steps: int):
    """(AdamW over trainable parameters, LambdaLR schedule); no decay on vectors (norms, biases)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": optim_cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=optim_cfg.lr, betas=tuple(optim_cfg.betas),
                                  fused=None if params[0].is_cuda else False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, optim_cfg, total_steps))
    return optimizer, scheduler


def prepare_model(vl, model_cfg) -> None:
    """Freeze the vision encoder and enable activation checkpointing as configured; train mode."""
    if model_cfg.freeze_vision:
        for p in vl.model.model.visual.parameters():
            p.requires_grad_(False)
    if model_cfg.activation_checkpointing:
        vl.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    vl.model.config.use_cache = False
    vl.model.train()


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def micro_batches(order, rank: int, world: int, batch_size: int, grad_accum: int) -> list[list[int]]:
    """This rank's micro-batches of the next optimizer step (the global batch is taken from `order`)."""
    return rank_share(order.take(batch_size * grad_accum * world), rank, world, batch_size, grad_accum)


def rank_share(items, rank: int, world: int, batch_size: int, grad_accum: int) -> list:
    """This rank's micro-batches of one step's global batch `items` (micro-batch m of rank r is the
    (m * world + r)-th run of batch_size items)."""
    return [items[(m * world + rank) * batch_size:(m * world + rank + 1) * batch_size] for m in range(grad_accum)]


def train_step(state: dict) -> dict:
    """One optimizer step over this rank's micro-batches; returns its metrics (all ranks agree)."""
    from tempo_fast.train.dist import all_reduce_sum

    cfg, info, vl, module = state["cfg"], state["info"], state["vl"], state["module"]
    optimizer, scheduler = state["optimizer"], state["scheduler"]
    t0 = time.perf_counter()
    parts = micro_batches(state["order"], info.rank, info.world_size, cfg.run.batch_size, cfg.run.grad_accum)
    batches = [collate([state["samples"][i] for i in part], vl) for part in parts]
    counts = torch.tensor([sum(b["n_tokens"] for b in batches), sum(b["n_seq_tokens"] for b in batches)],
                          dtype=torch.float64, device=info.device)
    counts = all_reduce_sum(counts)
    global_tokens = float(counts[0])
    t1 = time.perf_counter()
    total = torch.zeros((), dtype=torch.float64, device=info.device)
    for m, batch in enumerate(batches):
        if hasattr(module, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter on the last micro-batch only
            module.set_requires_gradient_sync(m == len(batches) - 1)
        with autocast(info.device):
            loss_sum, _ = sft_loss(vl, batch, module=module, reduction="sum")
        # FSDP averages gradients over ranks: scale so the result is the global token mean
        (loss_sum * (info.world_size / global_tokens)).backward()
        total += loss_sum.detach().double()
    t2 = time.perf_counter()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss = float(all_reduce_sum(total) / global_tokens)
    t3 = time.perf_counter()
    n_samples = cfg.run.batch_size * cfg.run.grad_accum * info.world_size
    step_time = t3 - t0
    return {"loss": loss, "lr": lr, "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor")
                                                      else grad_norm),
            "answer_tokens": int(global_tokens), "tokens_per_s": float(counts[1]) / step_time,
            "samples_per_s": n_samples / step_time, "step_time": step_time, "time_data": t1 - t0,
            "time_forward_backward": t2 - t1, "time_optimizer": t3 - t2}


def _evaluate(state: dict) -> dict:
    """Metrics of `tempo_fast.train.evaluate.evaluate_grounding` on the validation split (rank 0)."""
    from tempo_fast.train.evaluate import evaluate_grounding

    vl = state["vl"]
    vl.model.eval()
    try:
        with torch.no_grad():
            metrics = evaluate_grounding(vl, state["eval_records"], data_cfg=state["cfg"].data)
    finally:
        vl.model.train()
    return {f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


def setup(cfg: SFTConfig) -> dict:
    """Everything the loop needs: process group, data, model (wrapped), optimizer, resume point."""
    from tempo_fast.model import load_model
    from tempo_fast.train.checkpoint import latest_checkpoint, load_checkpoint
    from tempo_fast.train.data import GroundingSamples, SampleOrder, pir_records
    from tempo_fast.train.dist import wrap_model
    from tempo_fast.train.loop import start_run

    info, out, records, facts = start_run(cfg, "train_sft")
    dtype = DTYPES[cfg.model.dtype] if cfg.model.dtype else torch.float32
    vl = load_model(cfg.model.name, device=info.device, dtype=dtype)
    prepare_model(vl, cfg.model)
    samples = GroundingSamples(records[cfg.data.split], vl, cfg.data, facts=facts, device=info.device)
    module = wrap_model(vl.model, info)
    optimizer, scheduler = build_optimizer(vl.model, cfg.optim, cfg.run.steps)
    order = SampleOrder(len(samples), cfg.run.seed)
    start = 0
    checkpoint = latest_checkpoint(out) if cfg.run.resume else None
    if checkpoint is not None:
        restored = load_checkpoint(checkpoint, model=vl, optimizer=optimizer, scheduler=scheduler)
        start = restored["step"]
        order.load_state_dict(restored["data_state"])
        if info.is_main:
            print(f"resumed from {checkpoint} at step {start}", flush=True)
    eval_records = pir_records(records.get("val", []), cfg.data, facts) if cfg.run.eval_every else []
    return {"cfg": cfg, "info": info, "vl": vl, "module": module, "samples": samples, "order": order,
            "optimizer": optimizer, "scheduler": scheduler, "start": start, "out": out,
            "checkpoint": checkpoint, "eval_records": eval_records}


def _save(state: dict, step: int) -> Path:
    from tempo_fast.train.checkpoint import save_checkpoint

    cfg = state["cfg"]
    return save_checkpoint(state["out"], step=step, model=state["vl"], optimizer=state["optimizer"],
                           scheduler=state["scheduler"], data_state=state["order"].state_dict(), config=cfg,
                           keep=cfg.run.keep_checkpoints)


def train_sft(cfg: SFTConfig) -> Path:
    """Run SFT as `cfg` says (resuming from out_dir when allowed); returns the last checkpoint folder."""
    from tempo_fast.train.loop import run_steps

    return run_steps(setup(cfg), cfg.run, name="sft", train_step=train_step, evaluate=_evaluate, save=_save,
                     postfix=lambda m: {"loss": f"{m['loss']:.4f}", "lr": f"{m['lr']:.2e}"},
                     eval_on_every_rank=False)
