"""The pretraining loop: curriculum batches, teacher-forced loss, held-out evaluation, atomic
resumable checkpoints, a loadable export of the latest one and a one-line status file.

Step s draws its batch from a generator seeded by (seed, s) alone: which clips, which tasks and
stages, so a resumed run (weights, AdamW moments and schedule restored from the checkpoint) takes
the same steps as an uninterrupted one. The loss is the mean cross-entropy of the answer tokens
(and <|im_end|>), from the final hidden states at the positions that predict them through the LM
head (at vocab 1024 and a few answer tokens per sample plain torch is the fastest on CPU).
"""
from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import torch

from tempo_fast.pretrain.data import collate, encode, follow_ups, pixel_inputs, prepare_clips
from tempo_fast.pretrain.dense import DenseHead, VisionTap, clip_labels
from tempo_fast.pretrain.evaluate import eval_examples, evaluate
from tempo_fast.pretrain.tasks import make_task

# per stage: [(weight, task kinds, with video, with text evidence)]; a sequence asks
# questions_per_clip distinct questions of its kinds, a caption sequence only the caption (its text
# would answer every later question)
_CAPTION = ("caption",)
_TIMELINE = ("timeline",)
_ATTRIBUTES = ("colour", "shape")
_YES_NO = ("event", "event", "exists")
STAGES = {
    "text": [(0.6, _YES_NO, False, True), (0.15, _CAPTION, True, False), (0.25, _ATTRIBUTES, True, False)],
    "evidence": [(0.3, _YES_NO, True, True), (0.25, _YES_NO, True, False), (0.1, _YES_NO, False, True),
                 (0.1, _CAPTION, True, False), (0.25, _ATTRIBUTES + _YES_NO, True, False)],
    "video": [(0.5, _YES_NO, True, False), (0.1, _YES_NO, True, True), (0.05, _YES_NO, False, True),
              (0.1, _CAPTION, True, False), (0.25, _ATTRIBUTES + _YES_NO, True, False)],
    "timeline": [(0.4, _YES_NO, True, False), (0.05, _YES_NO, True, True), (0.05, _YES_NO, False, True),
                 (0.25, _TIMELINE, True, False), (0.05, _CAPTION, True, False),
                 (0.2, _ATTRIBUTES + _YES_NO, True, False)],
}


def stage_of(cfg, step: int) -> str:
    """The curriculum stage of (1-based) optimizer step `step`."""
    if step <= cfg.text_steps:
        return "text"
    if step <= cfg.evidence_steps:
        return "evidence"
    return "video" if cfg.timeline_steps is None or step <= cfg.timeline_steps else "timeline"


def draw_batch(cfg, vl, clips, train_idx: list[int], step: int) -> list:
    """The Examples of optimizer step `step` (a pure function of cfg.seed and step)."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    mix = STAGES[stage_of(cfg, step)]
    if stage_of(cfg, step) == "text" and cfg.text_stage_video != 0.4:  # STAGES' video share is 0.4
        mix = [(w * cfg.text_stage_video / 0.4 if video else w, kinds, video, evidence)
               for w, kinds, video, evidence in mix]
        mix = [m for m in mix if m[0] > 0]
    out = []
    while len(out) < cfg.batch_size:
        _, kinds, video, evidence = rng.choices(mix, weights=[m[0] for m in mix])[0]
        i = rng.choice(train_idx)
        tasks, seen = [], set()
        for k in range(1 if kinds in (_CAPTION, _TIMELINE) else cfg.questions_per_clip):
            task = make_task(clips.plans[i], rng.choice(kinds), rng, video=video, evidence=evidence and not tasks)
            if task is not None and task.question not in seen:
                tasks.append(task)
                seen.add(task.question)
        if tasks:
            example = encode(vl, clips, i, tasks[0])
            out.append(follow_ups(vl, example, tasks[1:]) if len(tasks) > 1 else example)
    return out


def loss_sum(vl, batch) -> torch.Tensor:
    """Summed cross-entropy of the answer tokens of a collate batch."""
    kwargs = {k: v for k, v in batch.items() if k not in ("labels", "first")}
    vl.model.model.rope_deltas = None
    out = vl.model(**kwargs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    keep = batch["labels"] >= 0
    logits = vl.lm_head(out.hidden_states[-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"][keep], reduction="sum")


def train_step(state: dict, step: int) -> dict:
    """One optimizer step; text-only and video examples run as two forwards (no padding of the
    short text prompts to the video prompts' length), the loss is the mean over all answer tokens."""
    cfg, vl, opt, sched = state["cfg"], state["vl"], state["optimizer"], state["scheduler"]
    t0 = time.perf_counter()
    examples = draw_batch(cfg, vl, state["clips"], state["train_idx"], step)
    groups = [g for g in ([e for e in examples if e.clip is None], [e for e in examples if e.clip is not None]) if g]
    batches = [collate(vl, state["clips"], g) for g in groups]
    n_tokens = sum(int((b["labels"] >= 0).sum()) for b in batches)
    t1 = time.perf_counter()
    total, dense = 0.0, None
    state["tap"].take()  # nothing from an evaluation forward
    for batch in batches:
        loss = loss_sum(vl, batch) / n_tokens
        embeds = state["tap"].take()
        if embeds is not None and cfg.dense_weight > 0:  # the video batch: dense vision labels too
            labels = torch.cat([clip_labels(state["clips"], e.clip, vl) for e in examples if e.clip is not None])
            dense = state["head"].loss(embeds, labels)
            loss = loss + cfg.dense_weight * dense
        loss.backward()
        total += float(loss.detach())
    params = [p for g in opt.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    t2 = time.perf_counter()
    return {"loss": total, "dense_loss": float("nan") if dense is None else float(dense.detach()), "lr": lr,
            "grad_norm": float(grad_norm), "stage": stage_of(cfg, step),
            "step_time": t2 - t0, "time_data": t1 - t0}


DENSE_EVAL_CLIPS = 32  # held-out clips of the dense-label accuracy


@torch.no_grad()
def dense_eval(state: dict) -> dict:
    """The dense head's per-field accuracy on the object tokens of held-out clips."""
    vl, clips, indices = state["vl"], state["clips"], state["dense_eval"]
    if not indices:
        return {}
    was_training = vl.model.training
    vl.model.eval()
    inputs = pixel_inputs(vl, clips, indices)
    vl.model.model.visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
    embeds = state["tap"].take()
    vl.model.train(was_training)
    labels = torch.cat([clip_labels(clips, i, vl) for i in indices])
    return state["head"].accuracy(embeds, labels)


def _export(state: dict, checkpoint: Path) -> None:
    """Point `export_dir` (a symlink, replaced atomically) at a copy of the checkpoint's model files."""
    export = Path(state["export"])
    versions = export.parent / f".{export.name}_versions"
    versions.mkdir(parents=True, exist_ok=True)
    target = versions / checkpoint.name
    if target.exists():
        shutil.rmtree(target)
    tmp = versions / f".tmp_{checkpoint.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns("training_state.pt"))
    os.replace(tmp, target)
    link = export.with_name(f".{export.name}.link{os.getpid()}")
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())
    if export.exists() and not export.is_symlink():
        shutil.rmtree(export)
    os.replace(link, export)
    for old in sorted(p for p in versions.iterdir() if p.name.startswith("step_"))[:-2]:
        shutil.rmtree(old, ignore_errors=True)


def _status_line(step: int, metrics: dict, cpu_seconds: float) -> str:
    def f(key):
        value = metrics.get(key)
        return "nan" if value is None else f"{value:.3f}"
    return (f"step {step} cpu_s {cpu_seconds:.0f} event_acc {f('event_acc')} event_auc {f('event_auc')} "
            f"exists_acc {f('exists_acc')} exists_auc {f('exists_auc')} caption_token_acc {f('caption_token_acc')} "
            f"colour_acc {f('colour_acc')} shape_acc {f('shape_acc')} event_text_auc {f('event_text_auc')} "
            f"event_evidence_auc {f('event_evidence_auc')} dense_colour_acc {f('dense_colour_acc')} "
            f"dense_shape_acc {f('dense_shape_acc')} dense_action_acc {f('dense_action_acc')}")


def setup(cfg) -> dict:
    from tempo_fast.config import save_config
    from tempo_fast.model import load_model
    from tempo_fast.model.tiny import build_tiny
    from tempo_fast.train.checkpoint import latest_checkpoint, load_checkpoint
    from tempo_fast.train.sft import build_optimizer

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    clips = prepare_clips(cfg.data_root, cfg.synth_config(), num_frames=cfg.num_frames, frame_size=cfg.frame_size,
                          progress=cfg.progress)
    init = build_tiny(out / "init", seed=cfg.seed)  # random init (tiny-random's init at this seed)
    vl = load_model(init)
    vl.model.config.use_cache = False
    vl.model.train()
    optim = _Optim(cfg)
    torch.manual_seed(cfg.seed)
    head = DenseHead(int(vl.model.config.vision_config.out_hidden_size))
    # one optimizer and schedule over the model and the dense head (the head is not exported)
    optimizer, scheduler = build_optimizer(torch.nn.ModuleDict({"model": vl.model, "head": head}), optim, cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(cfg, s))
    held_out = clips.split(("val", "test"))[:cfg.eval_clips]
    state = {"cfg": cfg, "vl": vl, "clips": clips, "train_idx": clips.split(("train",)), "optimizer": optimizer,
             "scheduler": scheduler, "start": 0, "out": out, "cpu_seconds": 0.0,
             "export": cfg.export_dir or str(out / "latest_model"), "status": cfg.status_file or str(out / "STATUS"),
             "eval": eval_examples(vl, clips, held_out, seed=cfg.seed + 1), "metrics": {},
             "head": head, "tap": VisionTap(vl.model.model.visual), "dense_eval": held_out[:DENSE_EVAL_CLIPS]}
    checkpoint = latest_checkpoint(out) if cfg.resume else None
    if checkpoint is not None:
        restored = load_checkpoint(checkpoint, model=vl, optimizer=optimizer, scheduler=scheduler)
        state["start"] = restored["step"]
        state["cpu_seconds"] = restored["extra"].get("cpu_seconds", 0.0)
        state["metrics"] = restored["extra"].get("metrics", {})
        if "dense_head" in restored["extra"]:
            head.load_state_dict(restored["extra"]["dense_head"])
        # the lr of the next step from this config's schedule (a resumed run may change the schedule)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * lr_multiplier(cfg, scheduler.last_epoch)
        print(f"resumed from {checkpoint} at step {state['start']}", flush=True)
    return state


def lr_multiplier(cfg, step: int) -> float:
    """Multiplier of cfg.lr after `step` optimizer steps: warm-up and cosine decay to min_lr_ratio
    over each cycle of cfg.cycle_steps (one cycle over all steps when 0); every cycle after the first
    peaks at restart_lr_scale."""
    from tempo_fast.train.sft import lr_factor

    cycle = cfg.cycle_steps or cfg.steps
    k = min(step, cfg.steps - 1) // cycle
    span = min(cycle, cfg.steps - k * cycle)  # a shorter last cycle still decays to the floor
    return lr_factor(step - k * cycle, _Optim(cfg), span) * (cfg.restart_lr_scale if k else 1.0)


class _Optim:
    """The optimizer fields `tempo_fast.train.sft.build_optimizer` reads, from a PretrainConfig."""

    def __init__(self, cfg):
        self.lr, self.weight_decay, self.betas = cfg.lr, cfg.weight_decay, (0.9, 0.99)
        self.warmup_steps, self.min_lr_ratio = cfg.warmup_steps, cfg.min_lr_ratio


def _save(state: dict, step: int) -> Path:
    from tempo_fast.train.checkpoint import save_checkpoint

    cfg = state["cfg"]
    return save_checkpoint(state["out"], step=step, model=state["vl"], optimizer=state["optimizer"],
                           scheduler=state["scheduler"], data_state={"step": step}, config=cfg,
                           extra={"cpu_seconds": state["cpu_seconds"], "metrics": state["metrics"],
                                  "dense_head": state["head"].state_dict()},
                           keep=cfg.keep_checkpoints)


def train_pretrain(cfg) -> dict:
    """Run pretraining as `cfg` says (resuming when allowed); returns {"checkpoint", "metrics", "cpu_seconds"}."""
    from tqdm import tqdm

    from tempo_fast.train.log import MetricsLogger

    state = setup(cfg)
    start, out = state["start"], state["out"]
    last = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    logger = MetricsLogger(out)
    logger.truncate_after(start)
    checkpoint = None
    bar = tqdm(total=cfg.steps, initial=start, desc="pretrain", unit="step", disable=not cfg.progress)
    try:
        for step in range(start + 1, last + 1):
            t0 = time.process_time()
            metrics = train_step(state, step)
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                state["metrics"] = {**evaluate(state["vl"], state["clips"], state["eval"]), **dense_eval(state)}
                metrics.update({f"eval_{k}": v for k, v in state["metrics"].items()})
            state["cpu_seconds"] += time.process_time() - t0
            metrics["cpu_seconds"] = state["cpu_seconds"]
            if step == 1 or step % 10 == 0 or step == last or "eval_event_acc" in metrics:
                logger.log(step, **metrics)
            if "eval_event_acc" in metrics:
                Path(state["status"]).write_text(_status_line(step, state["metrics"], state["cpu_seconds"]) + "\n")
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", stage=metrics["stage"])
            bar.update(1)
            if step == last or (cfg.save_every and step % cfg.save_every == 0):
                checkpoint = _save(state, step)
                _export(state, checkpoint)
    finally:
        bar.close()
        logger.close()
        state["tap"].close()
    return {"checkpoint": checkpoint, "metrics": state["metrics"], "cpu_seconds": state["cpu_seconds"],
            "step": last}
