"""The end-to-end demo: synthetic data -> SFT -> PIR-GRPO -> held-out evaluation, with ablations.

    tempo-fast demo                    # about 7 minutes on a 2-core CPU, writes runs/demo
    tempo-fast demo --quick --out tmp  # a smoke run in about a minute (tests)

On a fresh machine with nothing downloaded, `run_demo(cfg)`:
1. renders the synthetic set (`tempo_fast.data.generate_synthetic`: short clips of coloured shapes
   with events at known times; train / val / test splits by video) into OUT/data. The demo's data is
   sized for its model and made so that the answer must come from the video: 4-8 s clips with one or
   two objects, each doing ONE thing (appear, disappear, move or change colour) at a random time, with
   the generator's base event lengths (0.5-2.5 s). With the generator's full schedules (an object
   appears first, moves, disappears last) and longer events, the action word alone predicts the window
   so well that a model asked about another video scored as high as on its own (see "grpo_swapped");
   with 8-16 s clips, 16 frames were too coarse and SFT did no better than a random window;
2. SFT of the `tiny` preset on the train split (`tempo_fast.train.sft.train_sft`; answers in the
   DESIGN.md grammar, PIR negatives answered `none`) into OUT/sft;
3. PIR-GRPO from the SFT checkpoint (`tempo_fast.train.grpo.train_grpo`) into OUT/grpo;
4. scores on the held-out split (`eval_split`; its relevant queries plus PIR negatives made from
   them with the `eval_*_fraction`s): the trivial baselines, SFT and GRPO
   (`tempo_fast.train.evaluate`), and SFT and GRPO once more with every relevant query asked of
   another held-out video ("sft_swapped", "grpo_swapped", `evaluate.swap_videos`): what a model
   scores without the video's evidence it gets from the query text alone (and the clip length the
   timestamps give away), so the gap to "sft" / "grpo" is what it takes from the video;
5. ablations under the same visual-token budget (the same frames per video and pixels per frame):
   "saa" against "uniform" frame sampling, each the SFT recipe above (the "saa" run IS the main SFT
   run; "uniform" is a second SFT with uniformly spaced frames), and GRPO without the PIR samples
   ("grpo_no_pir": the GRPO recipe from the same SFT checkpoint, relevant samples only);
6. writes OUT/demo_metrics.json, training curves (OUT/sft_curves.png, OUT/grpo_curves.png), an SAA
   picture of one held-out video (OUT/saa.png, drawn by `tempo-fast saa`'s `draw`), prints the
   table and the `tempo-fast ground` command that runs the trained checkpoint (OUT/grpo/step_*).

demo_metrics.json: {"baselines": {"whole", "random", "refuse"}, "sft", "sft_swapped", "grpo",
"grpo_swapped", "saa", "uniform", "grpo_no_pir"}, each with R1@0.5, R1@0.7, mIoU, refusal_acc,
false_refusal (percent; see `tempo_fast.train.evaluate`), plus "setup" (the resolved DemoConfig and the eval set's counts),
"seconds" (wall time per stage), "checkpoint" and "ground_command". Runs resume from their folders,
so a second `tempo-fast demo` with the same OUT reuses finished training.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

METRICS = ("R1@0.5", "R1@0.7", "mIoU", "refusal_acc", "false_refusal")


@dataclass
class DemoConfig:
    """What the demo trains and evaluates (`--quick` swaps in QUICK's sizes)."""

    out: str = "runs/demo"                 # output folder: data, runs, demo_metrics.json, PNGs
    quick: bool = False                    # smoke run for tests: a few clips and steps (about a minute)
    eval_split: Literal["val", "test"] = "test"  # held-out split scored (tune on val, report test)
    seed: int = 0                          # seed of the synthetic set, the PIR samples and training
    num_videos: int = 1000                 # synthetic clips, split 80/10/10 by video into train/val/test
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
    freeze_vision: bool = False            # keep the (random) vision tower of the tiny preset fixed
    irrelevant_fraction: float = 0.2       # share of training samples made irrelevant (SFT and GRPO)
    partial_fraction: float = 0.2          # share of training samples made partially irrelevant
    eval_irrelevant_fraction: float = 0.2  # share of held-out samples made irrelevant
    eval_partial_fraction: float = 0.2     # share of held-out samples made partially irrelevant
    sft_steps: int = 2000                  # SFT optimizer steps
    sft_lr: float = 3e-3                   # SFT peak learning rate
    batch_size: int = 8                    # SFT samples per step
    grpo_steps: int = 100                  # GRPO optimizer steps
    grpo_lr: float = 1e-4                  # GRPO peak learning rate (3e-4 drifted from SFT for no gain on val)
    grpo_batch_size: int = 4               # GRPO prompts per step
    num_generations: int = 8               # G: sampled answers per prompt in GRPO
    max_new_tokens: int = 24               # longest answer (GRPO sampling and evaluation)
    threads: int = 1                       # torch CPU threads (0: torch's default; tiny ops gain nothing from more)
    progress: bool = True                  # progress bars


QUICK = dict(num_videos=12, num_frames=4, frame_pixels=56 * 56, sft_steps=4, batch_size=4, grpo_steps=2,
             grpo_batch_size=2, num_generations=2, max_new_tokens=8)


def quick_config(cfg: DemoConfig, given: set) -> DemoConfig:
    """`cfg` with QUICK's sizes for every field not given explicitly."""
    return dataclasses.replace(cfg, **{k: v for k, v in QUICK.items() if k not in given})


def data_config(cfg: DemoConfig, *, sampling: str = "saa"):
    from tempo_fast.train.config import DataConfig

    return DataConfig(root=str(Path(cfg.out) / "data"), num_videos=cfg.num_videos, seed=cfg.seed,
                      min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, min_objects=cfg.min_objects,
                      max_objects=cfg.max_objects, event_scale=cfg.event_scale,
                      events_per_object=cfg.events_per_object, distractor_prob=cfg.distractor_prob,
                      split="train", num_frames=cfg.num_frames, sampling=sampling, alpha=cfg.alpha,
                      min_pixels=cfg.frame_pixels, max_pixels=cfg.frame_pixels,
                      irrelevant_fraction=cfg.irrelevant_fraction, partial_fraction=cfg.partial_fraction)


def sft_config(cfg: DemoConfig, data_cfg, out_dir: Path):
    from tempo_fast.train.config import ModelConfig, OptimConfig, RunConfig, SFTConfig

    return SFTConfig(model=ModelConfig(name="tiny", freeze_vision=cfg.freeze_vision), data=data_cfg,
                     optim=OptimConfig(lr=cfg.sft_lr, warmup_steps=min(20, cfg.sft_steps // 10)),
                     run=RunConfig(out_dir=str(out_dir), steps=cfg.sft_steps, batch_size=cfg.batch_size,
                                   seed=cfg.seed, device="cpu", log_every=max(1, cfg.sft_steps // 100),
                                   save_every=0, keep_checkpoints=1, progress=cfg.progress))


def grpo_config(cfg: DemoConfig, data_cfg, out_dir: Path, init_from: Path, *, pir: bool = True):
    from tempo_fast.train.config import GRPOConfig, ModelConfig, OptimConfig, RunConfig

    return GRPOConfig(model=ModelConfig(name="tiny", freeze_vision=cfg.freeze_vision), data=data_cfg,
                      optim=OptimConfig(lr=cfg.grpo_lr, warmup_steps=min(5, cfg.grpo_steps // 10)),
                      run=RunConfig(out_dir=str(out_dir), steps=cfg.grpo_steps, batch_size=cfg.grpo_batch_size,
                                    seed=cfg.seed, device="cpu", log_every=1, save_every=0, keep_checkpoints=1,
                                    progress=cfg.progress),
                      init_from=str(init_from), num_generations=cfg.num_generations,
                      max_new_tokens=cfg.max_new_tokens, pir=pir)


def eval_records(records, cfg: DemoConfig, facts) -> list:
    """The held-out split's relevant records with PIR negatives made from them (seeded)."""
    from tempo_fast.data.pir import PIRConfig, make_pir_samples

    pir = PIRConfig(irrelevant_fraction=cfg.eval_irrelevant_fraction, partial_fraction=cfg.eval_partial_fraction)
    return make_pir_samples(list(records), pir, seed=cfg.seed + 1, facts=facts)


def _score(checkpoint: Path, records, data_cfg, max_new_tokens: int) -> dict:
    from tempo_fast.model import load_model
    from tempo_fast.train.evaluate import evaluate_grounding

    vl = load_model(checkpoint)
    metrics = evaluate_grounding(vl, records, data_cfg=data_cfg, max_new_tokens=max_new_tokens)
    metrics.pop("answers")
    return metrics


def _plain(metrics: dict) -> dict:
    """NaN -> None, so the JSON is strict."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def format_table(results: dict) -> str:
    rows = [(f"baseline: {name}", m) for name, m in results["baselines"].items()]
    rows += [(name, results[name]) for name in ("sft", "sft_swapped", "grpo", "grpo_swapped", "saa", "uniform",
                                                  "grpo_no_pir")
             if name in results]
    head = f"{'':<20}" + "".join(f"{k:>14}" for k in METRICS)
    lines = [head, "-" * len(head)]
    for name, m in rows:
        cells = "".join(f"{'-' if m.get(k) is None else format(m[k], '.2f'):>14}" for k in METRICS)
        lines.append(f"{name:<20}{cells}")
    return "\n".join(lines)


def saa_picture(video: str, cfg: DemoConfig, out_png: Path) -> Path:
    from tempo_fast.commands.saa import draw
    from tempo_fast.video.saa import saa_plan

    plan = saa_plan(video, cfg.num_frames, alpha=cfg.alpha)
    draw(plan, video, out_png, thumbs=min(cfg.num_frames, 16), thumb_height=64, aspect=1.0)
    return out_png


def ground_command(video: str, query: str, checkpoint: Path, cfg: DemoConfig) -> str:
    """The `tempo-fast ground` call that runs the checkpoint with the frames it was trained on."""
    return (f"tempo-fast ground {shlex.quote(str(video))} --query {shlex.quote(query)} "
            f"--model {shlex.quote(str(checkpoint))} --num-frames {cfg.num_frames} --alpha {cfg.alpha} "
            f"--min-pixels {cfg.frame_pixels} --max-pixels {cfg.frame_pixels} --no-decode-resize")


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage of the module docstring; returns what demo_metrics.json holds."""
    import torch

    from tempo_fast.train.data import prepare_synthetic
    from tempo_fast.train.evaluate import baselines, swap_videos
    from tempo_fast.train.grpo import train_grpo
    from tempo_fast.train.log import plot_curves
    from tempo_fast.train.sft import train_sft

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds, start = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal start
        now = time.perf_counter()
        seconds[stage] = round(now - start, 2)
        start = now
        print(f"[demo] {stage}: {seconds[stage]:.1f} s", flush=True)

    saa_data = data_config(cfg)
    _, records, facts = prepare_synthetic(saa_data, progress=cfg.progress)
    if not records[cfg.eval_split]:
        raise ValueError(f"demo: the {cfg.eval_split!r} split is empty; raise num_videos (got {cfg.num_videos})")
    held_out = eval_records(records[cfg.eval_split], cfg, facts)
    lap("data")

    sft_ckpt = train_sft(sft_config(cfg, saa_data, out / "sft"))
    lap("sft")
    grpo_ckpt = train_grpo(grpo_config(cfg, saa_data, out / "grpo", sft_ckpt))
    lap("grpo")
    results = {"baselines": baselines(held_out, seed=cfg.seed)}
    results["sft"] = _score(sft_ckpt, held_out, saa_data, cfg.max_new_tokens)
    results["grpo"] = _score(grpo_ckpt, held_out, saa_data, cfg.max_new_tokens)
    swapped = swap_videos(held_out, seed=cfg.seed)  # empty when the split holds one video (--quick)
    for name, checkpoint in (("sft_swapped", sft_ckpt), ("grpo_swapped", grpo_ckpt)):
        results[name] = (_score(checkpoint, swapped, saa_data, cfg.max_new_tokens) if swapped
                         else dict.fromkeys(METRICS, math.nan))
    lap("evaluate")

    uniform_data = data_config(cfg, sampling="uniform")
    uniform_ckpt = train_sft(sft_config(cfg, uniform_data, out / "ablation_uniform_sft"))
    results["saa"] = dict(results["sft"])
    results["uniform"] = _score(uniform_ckpt, held_out, uniform_data, cfg.max_new_tokens)
    no_pir_ckpt = train_grpo(grpo_config(cfg, saa_data, out / "ablation_grpo_no_pir", sft_ckpt, pir=False))
    results["grpo_no_pir"] = _score(no_pir_ckpt, held_out, saa_data, cfg.max_new_tokens)
    lap("ablations")

    plot_curves(out / "sft" / "metrics.jsonl", out / "sft_curves.png", ["loss", "lr"], title="SFT",
                log_scale=("loss",))
    plot_curves(out / "grpo" / "metrics.jsonl", out / "grpo_curves.png",  # (the loss is 0 on average at beta 0)
                ["reward_mean", "iou", "refusal_acc", "completion_len"], title="PIR-GRPO", smooth=10)
    example = next(r for r in held_out if r.relevance == "relevant")
    saa_picture(str(example.video_path), cfg, out / "saa.png")
    lap("plots")

    counts = {kind: sum(r.relevance == kind for r in held_out) for kind in ("relevant", "irrelevant", "partial")}
    report = {name: _plain(m) for name, m in results.items() if name != "baselines"}
    report["baselines"] = {name: _plain(m) for name, m in results["baselines"].items()}
    report["setup"] = {"config": dataclasses.asdict(cfg), "eval_split": cfg.eval_split, "eval_counts": counts,
                       "ablation": "saa = the main SFT run; uniform = the same SFT recipe with uniform frames; "
                                   "grpo_no_pir = the GRPO recipe from the same SFT checkpoint, relevant samples only"}
    report["seconds"] = {**seconds, "total": round(sum(seconds.values()), 2)}
    report["checkpoint"] = str(grpo_ckpt)
    report["ground_command"] = ground_command(str(example.video_path), example.query, grpo_ckpt, cfg)
    (out / "demo_metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
