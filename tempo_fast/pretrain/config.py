"""`PretrainConfig`: what `tempo-fast pretrain` renders, trains and writes, and the curriculum.

Data: the synthetic generator with a seed and settings the demo never uses (the demo: seed 0,
4-8 s, 1-2 objects, one event each): seed 777, 3-10 s clips, 1-3 objects, up to two events each.
Curriculum by step: until `text_steps` the yes/no questions come with the clip written as text and
no video (the comparison learned on ~40-token prompts) while the video tasks (caption, colour,
shape) start; until `evidence_steps` the text evidence sits beside the video and some yes/no
questions have the video alone; then mostly the video alone (`STAGES` in loop.py).
The defaults are the run that made the shipped weights (tempo_fast/model/weights/manifest.json):
`tempo-fast pretrain --ship` rebuilds them (about 5,000 CPU seconds, one thread): cosine cycles of
10,000 steps (the last one 5,000), each later one a warm restart to the full peak lr (`cycle_steps`,
`restart_lr_scale`), and from `timeline_steps` on, timed captions beside the other video tasks (the
"timeline" stage: where in the clip each event is, read off the ETA timestamps; without it the
fine-tuned demo models answered one fixed window whatever the video).
Every video batch also trains a linear head on dense per-token labels (pretrain/dense.py,
`dense_weight`): without it the vision tower never learned shapes and the LM stayed near chance
on the video-only yes/no questions (v1, no dense labels: held-out AUC 0.62 / 0.55 after 8,000 steps;
with them and the yes/no decision in <answer> tags where the grounding refusal decision is:
0.80 / 0.85 after one 10,000-step cycle (0.82 / 0.95 on fresh demo-like clips), 0.96 / 0.98 after
the second, 0.99 / 1.00 after the timeline cycle (0.98 / 1.00 on fresh demo-like clips).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PretrainConfig:
    """Pretraining of the tiny preset on general vision-language tasks about synthetic clips."""

    out_dir: str = "runs/pretrain"             # checkpoints, metrics.jsonl, the final tiny.safetensors + manifest.json
    data_root: str = "runs/pretrain/data"      # pretraining clips (rendered here if missing) and their frame cache
    export_dir: str | None = None              # a loadable model folder of the latest checkpoint (None: OUT/latest_model)
    status_file: str | None = None             # one-line status written at every evaluation (None: OUT/STATUS)
    ship: bool = False                         # at the end, copy the weights + manifest into tempo_fast/model/weights
    num_videos: int = 3000                     # pretraining clips (80/10/10 by video; val + test are held out)
    data_seed: int = 777                       # generator seed (the demo uses 0)
    min_seconds: float = 3.0                   # shortest clip
    max_seconds: float = 10.0                  # longest clip
    min_objects: int = 1                       # objects per clip, at least
    max_objects: int = 3                       # objects per clip, at most
    events_per_object: int = 2                 # events per object, at most
    distractor_prob: float = 0.3               # chance of each distractor (shake, brightness, cut)
    num_frames: int = 16                       # frames per clip (uniform), as the demo
    frame_size: int = 84                       # frame side in pixels fed to the model, as the demo
    steps: int = 25000                         # optimizer steps
    text_steps: int = 1500                     # curriculum: text evidence without video until this step
    evidence_steps: int = 3500                 # curriculum: text evidence beside the video until this step
    timeline_steps: int | None = 20000         # curriculum: after this step, timed captions join the video tasks (None: never)
    text_stage_video: float = 0.4              # share of video tasks (caption, colour, shape) in the text stage
    batch_size: int = 16                       # clips (sequences) per step
    questions_per_clip: int = 4                # chat turns per sequence: one video, several questions
    lr: float = 3e-3                           # peak learning rate (AdamW)
    warmup_steps: int = 100                    # linear warm-up
    min_lr_ratio: float = 0.1                  # cosine decay to lr * this
    cycle_steps: int = 10000                   # warm restarts: the warm-up + cosine restarts every N steps (0: one cycle)
    restart_lr_scale: float = 1.0              # peak lr of every cycle after the first, as a share of lr
    weight_decay: float = 0.0                  # AdamW decoupled weight decay (matrices only)
    grad_clip: float = 1.0                     # max global gradient norm
    dense_weight: float = 1.0                  # weight of the dense vision-token labels' loss (pretrain/dense.py; 0: off)
    seed: int = 0                              # init and sample draws
    eval_every: int = 250                      # held-out evaluation every N steps (0: only at the end)
    eval_clips: int = 100                      # held-out clips the evaluation asks about
    save_every: int = 250                      # checkpoint (and export) every N steps
    keep_checkpoints: int = 2                  # step checkpoints kept
    resume: bool = True                        # continue from out_dir's latest checkpoint
    stop_after: int | None = None              # end this invocation after step N (with a checkpoint)
    threads: int = 1                           # torch CPU threads
    progress: bool = True                      # progress bar

    def __post_init__(self):
        problems = []
        for name in ("num_videos", "steps", "batch_size", "eval_clips", "keep_checkpoints", "threads",
                     "questions_per_clip"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("text_steps", "evidence_steps", "eval_every", "save_every", "warmup_steps", "cycle_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.text_steps > self.evidence_steps:
            problems.append(f"text_steps={self.text_steps} must be <= evidence_steps={self.evidence_steps}")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} must be > 0")
        if not self.restart_lr_scale > 0:
            problems.append(f"restart_lr_scale={self.restart_lr_scale} must be > 0")
        if self.num_frames < 2 or self.num_frames % 2:
            problems.append(f"num_frames={self.num_frames} must be even and >= 2")
        if self.frame_size < 28 or self.frame_size % 28:
            problems.append(f"frame_size={self.frame_size} must be a multiple of 28 (patch 14 x merge 2)")
        if not 0.0 <= self.distractor_prob <= 1.0:
            problems.append(f"distractor_prob={self.distractor_prob} must be in [0, 1]")
        if self.timeline_steps is not None and self.timeline_steps < self.evidence_steps:
            problems.append(f"timeline_steps={self.timeline_steps} must be >= evidence_steps={self.evidence_steps}")
        if problems:
            raise ValueError("PretrainConfig: " + "; ".join(problems))

    def synth_config(self):
        """The generator settings of the pretraining clips (a SynthConfig)."""
        from tempo_fast.data.synthetic import SynthConfig

        p = self.distractor_prob
        return SynthConfig(num_videos=self.num_videos, seed=self.data_seed, min_seconds=self.min_seconds,
                           max_seconds=self.max_seconds, min_objects=self.min_objects, max_objects=self.max_objects,
                           events_per_object=self.events_per_object, shake_prob=p, brightness_prob=p, cut_prob=p)
