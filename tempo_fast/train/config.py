"""Training configs: nested dataclasses for SFT and PIR-GRPO, one comment per field.

The `tempo-fast sft` / `tempo-fast grpo` flags are generated from these by `tempo_fast.config`
(`--optim-lr`, `--run-steps`, ...). Batch sizes: `run.batch_size` samples per micro-batch on
each process, `run.grad_accum` micro-batches per optimizer step, so one step sees
batch_size * grad_accum * world_size samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelConfig:
    """Which model to train and how."""

    name: str = "tiny"                         # "tiny" (offline preset) or a local checkpoint folder
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # weight dtype (None: fp32; bf16 autocast runs on CUDA anyway)
    freeze_vision: bool = True                 # keep the vision encoder's weights fixed
    activation_checkpointing: bool = False     # recompute decoder activations in backward (less memory, more compute)


@dataclass
class DataConfig:
    """The synthetic grounding set and how samples are built from it."""

    root: str = "runs/demo/data"               # synthetic set folder (generated here if missing)
    num_videos: int = 160                      # clips in the synthetic set
    seed: int = 0                              # seed of the synthetic set and of the PIR samples
    clip_size: int = 64                        # synthetic clip width and height in pixels
    min_seconds: float = 8.0                   # shortest synthetic clip
    max_seconds: float = 16.0                  # longest synthetic clip
    min_objects: int = 2                       # objects per synthetic clip, at least
    max_objects: int = 4                       # objects per synthetic clip, at most
    event_scale: float = 1.0                   # synthetic event lengths times this (SynthConfig.event_scale)
    events_per_object: int = 0                 # synthetic events per object, at most (0: 1-4; SynthConfig)
    distractor_prob: float | None = None       # chance of each distractor (shake, brightness, cut) per clip (None: SynthConfig's)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # synthetic train / val / test shares of the clips
    split: str = "train"                       # split to train on (train / val / test)
    num_frames: int = 8                        # frames given to the model per video (even)
    sampling: Literal["saa", "uniform"] = "saa"  # frame sampling: SAA or uniform
    alpha: float = 0.5                         # SAA mix of content-driven density (0 = uniform)
    min_pixels: int | None = None              # per-frame pixel lower bound for the resize (None: the checkpoint's)
    max_pixels: int | None = None              # per-frame pixel upper bound (None: the checkpoint's)
    irrelevant_fraction: float = 0.2           # share of samples turned into irrelevant queries (PIR)
    partial_fraction: float = 0.2              # share of samples turned into partially irrelevant queries (PIR)
    max_samples: int | None = None             # use only the first N records of the split (None: all)

    def __post_init__(self):
        problems = []
        if self.num_frames < 2 or self.num_frames % 2:
            problems.append(f"num_frames={self.num_frames} must be even and >= 2 (frames pair into temporal patches)")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha={self.alpha} must be in [0, 1]")
        for name in ("irrelevant_fraction", "partial_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.irrelevant_fraction + self.partial_fraction > 1.0:
            problems.append("irrelevant_fraction + partial_fraction must be <= 1")
        if self.num_videos < 1:
            problems.append(f"num_videos={self.num_videos} must be >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            problems.append(f"max_samples={self.max_samples} must be >= 1 or None")
        if problems:
            raise ValueError("DataConfig: " + "; ".join(problems))


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = 1e-3                           # peak learning rate
    weight_decay: float = 0.0                  # AdamW decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.99)   # AdamW betas
    warmup_steps: int = 10                     # linear warm-up steps from 0 to lr
    min_lr_ratio: float = 0.1                  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0                     # max global gradient norm (0: no clipping)

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"OptimConfig: lr={self.lr} must be > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"OptimConfig: warmup_steps={self.warmup_steps} must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"OptimConfig: min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.grad_clip < 0:
            raise ValueError(f"OptimConfig: grad_clip={self.grad_clip} must be >= 0")


@dataclass
class RunConfig:
    """Steps, batches, devices, logging and checkpoints."""

    out_dir: str = "runs/sft"                  # output folder: checkpoints, metrics.jsonl, config.json
    steps: int = 100                           # optimizer steps in the whole run
    batch_size: int = 8                        # samples per micro-batch on each process
    grad_accum: int = 1                        # micro-batches per optimizer step
    seed: int = 0                              # seed of model init noise, sample order and sampling
    device: str = "auto"                       # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    log_every: int = 5                         # write a metrics line every N steps (the first and last always)
    eval_every: int = 0                        # evaluate every N steps (0: never during training)
    save_every: int = 50                       # checkpoint every N steps (and at the end)
    keep_checkpoints: int = 2                  # how many step checkpoints to keep
    resume: bool = True                        # continue from out_dir's latest checkpoint when there is one
    stop_after: int | None = None              # end this invocation (with a checkpoint) once step N of the run is done
    tensorboard: bool = False                  # also write TensorBoard events to out_dir/tb
    progress: bool = True                      # show a progress bar (rank 0)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunConfig: {name}={getattr(self, name)} must be >= 1")
        for name in ("eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"RunConfig: {name}={getattr(self, name)} must be >= 0")


@dataclass
class SFTConfig:
    """Supervised fine-tuning on teacher-forced answers."""

    model: ModelConfig = field(default_factory=ModelConfig)   # model to train
    data: DataConfig = field(default_factory=DataConfig)      # training samples
    optim: OptimConfig = field(default_factory=OptimConfig)   # optimizer and schedule
    run: RunConfig = field(default_factory=RunConfig)         # steps, logging, checkpoints


@dataclass
class GRPOConfig:
    """PIR-GRPO after an SFT warm-up."""

    model: ModelConfig = field(default_factory=ModelConfig)   # model to train (weights from init_from when set)
    data: DataConfig = field(default_factory=DataConfig)      # training samples (PIR fractions set the mix)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4))  # optimizer and schedule
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/grpo", batch_size=4))  # steps, logging, checkpoints
    init_from: str | None = None               # SFT checkpoint folder to start from (None: model.name)
    num_generations: int = 8                   # G: sampled answers per prompt
    max_new_tokens: int = 32                   # longest sampled answer
    temperature: float = 1.0                   # sampling temperature
    top_p: float = 1.0                         # nucleus sampling mass (1: off)
    top_k: int = 0                             # top-k sampling (0: off)
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "grpo"  # loss normalisation of grpo_loss
    beta: float = 0.0                          # KL weight to the frozen reference model (0: no reference)
    epsilon_low: float = 0.2                   # lower clip of the importance ratio (1 - eps)
    epsilon_high: float = 0.28                 # upper clip of the importance ratio (1 + eps)
    delta: float | None = None                 # two-sided clip of the ratio for negative advantages (None: off)
    importance_sampling_level: Literal["token", "sequence"] = "token"  # ratio per token or per sequence
    num_iterations: int = 1                    # optimizer passes over each batch of rollouts
    scale_rewards: Literal["group", "batch", "none"] = "group"  # advantage scaling of group_advantages
    format_weight: float = 0.1                 # weight of the format reward
    pir: bool = True                           # mix irrelevant / partially irrelevant samples in

    def __post_init__(self):
        if self.num_generations < 2:
            raise ValueError(f"GRPOConfig: num_generations={self.num_generations} must be >= 2")
        if self.max_new_tokens < 1:
            raise ValueError(f"GRPOConfig: max_new_tokens={self.max_new_tokens} must be >= 1")
        if not self.temperature > 0:
            raise ValueError(f"GRPOConfig: temperature={self.temperature} must be > 0")
        if self.num_iterations < 1:
            raise ValueError(f"GRPOConfig: num_iterations={self.num_iterations} must be >= 1")
