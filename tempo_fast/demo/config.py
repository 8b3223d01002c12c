"""What the demo trains and evaluates: `DemoConfig`, the `--quick` sizes, and the SFT / GRPO /
data configs and the held-out set made from it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class DemoConfig:
    """What the demo trains and evaluates (`--quick` swaps in QUICK's sizes)."""

    out: str = "runs/demo"                 # output folder: data, runs, demo_metrics.json, PNGs
    quick: bool = False                    # smoke run for tests: a few clips and steps (well under a minute)
    model: str = "tiny"                    # model to start from: the pretrained "tiny" preset or a checkpoint folder
    eval_split: Literal["val", "test"] = "test"  # held-out split scored (tune on val, report test)
    seed: int = 0                          # seed of the synthetic set, the PIR samples, training and the bootstrap
    num_videos: int = 1000                 # synthetic clips, split by video into train/val/test
    split_fractions: tuple[float, float, float] = (0.75, 0.1, 0.15)  # train / val / test shares of the clips
    min_seconds: float = 4.0               # shortest clip: short clips keep a temporal patch under ~0.5 s
    max_seconds: float = 8.0               # longest clip
    min_objects: int = 1                   # objects per clip, at least
    max_objects: int = 2                   # objects per clip, at most
    event_scale: float = 1.0               # event lengths times this (base 0.5-2.5 s)
    events_per_object: int = 1             # events per object, at most (0: the generator's 1-4 in a fixed order)
    distractor_prob: float = 0.3           # chance of each distractor (shake, brightness, cut) per clip
    num_frames: int = 16                   # frames per video: with frame_pixels, the visual-token budget
    frame_pixels: int = 84 * 84            # pixels per frame fed to the model (min = max pixels)
    alpha: float = 0.5                     # SAA mix of content-driven and uniform density
    freeze_vision: bool = True             # keep the pretrained vision tower fixed (SFT steps ~35% faster)
    irrelevant_fraction: float = 0.2       # share of training samples made irrelevant (SFT and GRPO)
    partial_fraction: float = 0.2          # share of training samples made partially irrelevant
    eval_irrelevant_fraction: float = 0.5  # held-out negatives: this share of the relevant queries again, irrelevant
    eval_partial_fraction: float = 0.5     # ... and this share as partially irrelevant (added, none replaced)
    sft_steps: int = 1000                  # SFT optimizer steps (from the pretrained model)
    sft_lr: float = 1e-3                   # SFT peak learning rate
    batch_size: int = 8                    # SFT samples per step
    grpo_steps: int = 30                   # GRPO optimizer steps
    grpo_lr: float = 1e-4                  # GRPO peak learning rate
    grpo_batch_size: int = 4               # GRPO prompts per step
    num_generations: int = 8               # G: sampled answers per prompt in GRPO
    temperature: float = 1.0               # GRPO sampling temperature (below 1: fewer malformed samples)
    max_new_tokens: int = 24               # longest answer (GRPO sampling and evaluation)
    ablations: bool = True                 # run the ablations (False: SFT, GRPO and their scores only, for tuning)
    eval_batch_size: int = 16              # prompts per prefill in evaluation
    bootstrap: int = 1000                  # bootstrap resamples for the 95% intervals (0: none)
    workers: int = 2                       # processes for the two lanes of runs (1: one after the other; same numbers)
    threads: int = 1                       # torch CPU threads (0: torch's default; tiny ops gain nothing from more)
    progress: bool = True                  # progress bars


QUICK = dict(num_videos=16, num_frames=4, frame_pixels=56 * 56, sft_steps=4, batch_size=4, grpo_steps=2,
             grpo_batch_size=2, num_generations=2, max_new_tokens=8, bootstrap=50,
             split_fractions=(0.5, 0.25, 0.25))


def quick_config(cfg: DemoConfig, given: set) -> DemoConfig:
    """`cfg` with QUICK's sizes for every field not given explicitly."""
    return dataclasses.replace(cfg, **{k: v for k, v in QUICK.items() if k not in given})


def data_config(cfg: DemoConfig, *, sampling: str = "saa", pir: bool = True):
    """The DataConfig of the demo's training runs (`pir=False`: relevant samples only)."""
    from tempo_fast.train.config import DataConfig

    return DataConfig(root=str(Path(cfg.out) / "data"), num_videos=cfg.num_videos, seed=cfg.seed,
                      split_fractions=tuple(cfg.split_fractions), min_seconds=cfg.min_seconds,
                      max_seconds=cfg.max_seconds, min_objects=cfg.min_objects, max_objects=cfg.max_objects,
                      event_scale=cfg.event_scale, events_per_object=cfg.events_per_object,
                      distractor_prob=cfg.distractor_prob, split="train", num_frames=cfg.num_frames,
                      sampling=sampling, alpha=cfg.alpha, min_pixels=cfg.frame_pixels, max_pixels=cfg.frame_pixels,
                      irrelevant_fraction=cfg.irrelevant_fraction if pir else 0.0,
                      partial_fraction=cfg.partial_fraction if pir else 0.0)


def sft_config(cfg: DemoConfig, data_cfg, out_dir: Path):
    from tempo_fast.train.config import ModelConfig, OptimConfig, RunConfig, SFTConfig

    return SFTConfig(model=ModelConfig(name=cfg.model, freeze_vision=cfg.freeze_vision), data=data_cfg,
                     optim=OptimConfig(lr=cfg.sft_lr, warmup_steps=min(20, cfg.sft_steps // 10)),
                     run=RunConfig(out_dir=str(out_dir), steps=cfg.sft_steps, batch_size=cfg.batch_size,
                                   seed=cfg.seed, device="cpu", log_every=max(1, cfg.sft_steps // 100),
                                   save_every=0, keep_checkpoints=1, progress=cfg.progress))


def grpo_config(cfg: DemoConfig, data_cfg, out_dir: Path, init_from: Path, *, pir: bool = True):
    from tempo_fast.train.config import GRPOConfig, ModelConfig, OptimConfig, RunConfig

    return GRPOConfig(model=ModelConfig(name=cfg.model, freeze_vision=cfg.freeze_vision), data=data_cfg,
                      optim=OptimConfig(lr=cfg.grpo_lr, warmup_steps=min(5, cfg.grpo_steps // 10)),
                      run=RunConfig(out_dir=str(out_dir), steps=cfg.grpo_steps, batch_size=cfg.grpo_batch_size,
                                    seed=cfg.seed, device="cpu", log_every=1, save_every=0, keep_checkpoints=1,
                                    progress=cfg.progress),
                      init_from=str(init_from), num_generations=cfg.num_generations, temperature=cfg.temperature,
                      max_new_tokens=cfg.max_new_tokens, pir=pir)


def eval_records(records, cfg: DemoConfig, facts) -> list:
    """The held-out split's relevant records, then negatives made from copies of them (seeded):
    `eval_irrelevant_fraction` of the queries once more as irrelevant ones, `eval_partial_fraction`
    as partially irrelevant ones. No relevant record is replaced, so every relevant query is scored."""
    from tempo_fast.data.pir import PIRConfig, make_pir_samples

    relevant = [r for r in records if r.relevance == "relevant"]
    irr, par = cfg.eval_irrelevant_fraction, cfg.eval_partial_fraction
    if irr + par == 0:
        return relevant
    copies = [dataclasses.replace(r, id=f"{r.id}_neg") for r in relevant]
    pir = PIRConfig(irrelevant_fraction=irr, partial_fraction=par)
    negatives = [r for r in make_pir_samples(copies, pir, seed=cfg.seed + 1, facts=facts) if r.relevance != "relevant"]
    return relevant + negatives
