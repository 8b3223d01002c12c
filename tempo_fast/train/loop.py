"""What both training loops share: the run's start (process group, seeds, saved config, data)
and the step driver (resume point, stop_after, periodic evaluation, JSONL logging, the progress
bar, checkpoints). What a step does stays in sft.py and grpo.py."""
from __future__ import annotations

from pathlib import Path


def start_run(cfg, name: str):
    """Join the process group, seed every RNG, print and save the resolved config (rank 0), and
    make or find the synthetic set: returns (dist info, out_dir, records by split, facts)."""
    import random

    import numpy as np
    import torch

    from tempo_fast.config import print_config, save_config
    from tempo_fast.train.data import prepare_synthetic
    from tempo_fast.train.dist import init_distributed

    info = init_distributed(cfg.run.device)
    random.seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    out = Path(cfg.run.out_dir)
    if info.is_main:
        print_config(cfg)
        save_config(cfg, out / "config.json")
    _, records, facts = prepare_synthetic(cfg.data, progress=cfg.run.progress and info.is_main)
    if cfg.data.split not in records:
        raise ValueError(f"{name}: data.split {cfg.data.split!r} is not one of {sorted(records)}")
    return info, out, records, facts


def run_steps(state: dict, run, *, name: str, train_step, evaluate, save, postfix, eval_on_every_rank: bool):
    """Steps state["start"]+1 .. the run's last step; returns the last checkpoint folder (or None).

    train_step(state) -> metrics; evaluate(state) -> metrics, every run.eval_every steps (on every
    rank when the model is sharded, since its forward is collective; else on rank 0 only);
    save(state, step) -> folder; postfix(metrics) -> the progress bar's fields.
    """
    from tqdm import tqdm

    from tempo_fast.train.log import MetricsLogger

    info, start = state["info"], state["start"]
    logger = MetricsLogger(state["out"], tensorboard=run.tensorboard, rank0=info.is_main)
    logger.truncate_after(start)  # lines written after the checkpoint we resume from
    # the last step of this invocation: the run's end, or stop_after (a checkpoint is written there)
    last = run.steps if run.stop_after is None else min(run.steps, run.stop_after)
    checkpoint = state["checkpoint"]
    bar = tqdm(total=run.steps, initial=start, desc=name, unit="step", disable=not (run.progress and info.is_main))
    try:
        for step in range(start + 1, last + 1):
            metrics = train_step(state)
            if run.eval_every and step % run.eval_every == 0 and (eval_on_every_rank or info.is_main):
                metrics.update(evaluate(state))
            if step == 1 or step % run.log_every == 0 or step == last:
                logger.log(step, **metrics)
            bar.set_postfix(**postfix(metrics))
            bar.update(1)
            if step == last or (run.save_every and step % run.save_every == 0):
                checkpoint = save(state, step)
    finally:
        bar.close()
        logger.close()
    if info.is_main:
        print(f"checkpoint: {checkpoint}", flush=True)
    return Path(checkpoint) if checkpoint is not None else None


def run_command(name: str, config_class, train, args):
    """A training command's body: the dataclass config from the parsed flags (a bad value or
    config file exits with a one-line error naming the command), then `train(cfg)`, leaving the
    torchrun process group however it ends. Returns what `train` returns."""
    from tempo_fast.config import config_from_args
    from tempo_fast.train.dist import cleanup

    try:
        cfg = config_from_args(config_class, args)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"tempo-fast {name}: {exc}") from None
    try:
        return train(cfg)
    finally:
        cleanup()
