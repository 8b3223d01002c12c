"""What the demo shows: the terminal table, the README's markdown table (from one or several
demo_metrics.json, the second and later giving the spread over runs), the training curves, the
SAA picture and the `tempo-fast ground` command of the trained checkpoint."""
from __future__ import annotations

import math
import shlex
from pathlib import Path

from tempo_fast.demo.config import DemoConfig

COLUMNS = (("R1@0.5", "R1@0.5"), ("R1@0.7", "R1@0.7"), ("mIoU", "mIoU"), ("refusal_acc", "refusal acc"),
           ("false_refusal", "false refusals"), ("refusal_auc", "refusal AUC"))
ROWS = (("grpo", "PIR-GRPO (SFT + GRPO, with PIR)"), ("sft", "SFT with PIR negatives"),
        ("grpo_no_pir", "GRPO without PIR (same SFT)"), ("no_pir", "no PIR at all (SFT + GRPO)"),
        ("saa", "SFT, SAA frames"), ("uniform", "SFT, uniform frames"),
        ("grpo_swapped", "PIR-GRPO, swapped videos"), ("sft_swapped", "SFT, swapped videos"))
BASELINE_ROWS = (("whole", "baseline: whole video"), ("random", "baseline: random window"),
                 ("refuse", "baseline: always refuse"), ("prior", "baseline: best fixed window (fitted on train)"))


def _rows(report: dict) -> list:
    rows = [(label, report[name]) for name, label in ROWS if name in report]
    return rows + [(label, report["baselines"][name]) for name, label in BASELINE_ROWS if name in report["baselines"]]


def format_table(report: dict) -> str:
    """The terminal table: one row per model and baseline, point estimates in percent."""
    head = f"{'':<34}" + "".join(f"{title:>15}" for _, title in COLUMNS)
    lines = [head, "-" * len(head)]
    for label, m in _rows(report):
        cells = "".join(f"{'-' if m.get(k) is None else format(m[k], '.1f'):>15}" for k, _ in COLUMNS)
        lines.append(f"{label:<34}{cells}")
    return "\n".join(lines)


def _cell(m: dict, key: str) -> str:
    value = m.get(key)
    if value is None:
        return "-"
    ci = (m.get("ci") or {}).get(key)
    if ci and ci[0] is not None:
        return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"
    return f"{value:.1f}"


def format_markdown(reports: list) -> str:
    """README markdown: the first report's table with 95% intervals, its stage times and machine;
    with several reports (other seeds or machines) a second table of each metric's range over them."""
    if not reports:
        raise ValueError("format_markdown: no demo_metrics.json given")
    first = reports[0]
    setup, machine = first["setup"], first.get("machine", {})
    counts = setup["eval_counts"]
    lines = [f"Started from `{setup['config'].get('model')}`. Held-out `{setup['eval_split']}` split: {counts['relevant']} relevant queries, "
             f"{counts['irrelevant']} irrelevant and {counts['partial']} partially irrelevant ones "
             f"({setup.get('swapped_count', '?')} swapped); percent, 95% bootstrap intervals "
             f"({setup['config'].get('bootstrap')} resamples, seed {setup['config']['seed']}).", "",
             "| model | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for label, m in _rows(first):
        lines.append(f"| {label} | " + " | ".join(_cell(m, k) for k, _ in COLUMNS) + " |")
    seconds, cpu = first["seconds"], first.get("cpu_seconds", {})
    lines += ["", "Stage times, wall (CPU) seconds: "
              + ", ".join(f"{k} {v:.0f} ({cpu.get(k, math.nan):.0f})" for k, v in seconds.items() if k != "total")
              + f"; **total {seconds['total']:.0f} s** ({cpu.get('total', math.nan):.0f} s CPU)."]
    for name, lane in first.get("lane_seconds", {}).items():
        lines.append(f"Lane {name}: " + ", ".join(f"{k} {v:.0f} ({lane['cpu_seconds'].get(k, math.nan):.0f})"
                                                  for k, v in lane["seconds"].items()) + ".")
    lines += [f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, torch "
              f"{machine.get('torch', '?')} on {machine.get('threads', '?')} thread(s) per process, "
              f"{setup['config'].get('workers', 1)} processes; load average {machine.get('load_start')} at the start, "
              f"{machine.get('load_end')} at the end (1/5/15 min)."]
    if len(reports) > 1:
        seeds = ", ".join(str(r["setup"]["config"]["seed"]) for r in reports)
        lines += ["", f"Spread over {len(reports)} runs (seeds {seeds}): min - max of the point estimates.", "",
                  "| model | " + " | ".join(title for _, title in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        for name, label in ROWS:
            if not all(name in r for r in reports):
                continue
            cells = []
            for key, _ in COLUMNS:
                values = [r[name].get(key) for r in reports if r[name].get(key) is not None]
                cells.append(f"{min(values):.1f} - {max(values):.1f}" if values else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        totals = [r["seconds"]["total"] for r in reports]
        lines.append(f"\nTotal time: {min(totals):.0f} - {max(totals):.0f} s.")
    return "\n".join(lines)


def saa_picture(video: str, cfg: DemoConfig, out_png: Path) -> Path:
    from tempo_fast.commands.saa import draw
    from tempo_fast.video.saa import saa_plan

    plan = saa_plan(video, cfg.num_frames, alpha=cfg.alpha)
    draw(plan, video, out_png, thumbs=min(cfg.num_frames, 16), thumb_height=64, aspect=1.0)
    return out_png


def draw_plots(out: Path, video: str, cfg: DemoConfig) -> None:
    """OUT/sft_curves.png, OUT/grpo_curves.png and OUT/saa.png."""
    from tempo_fast.train.log import plot_curves

    plot_curves(out / "sft" / "metrics.jsonl", out / "sft_curves.png", ["loss", "lr"], title="SFT",
                log_scale=("loss",))
    plot_curves(out / "grpo" / "metrics.jsonl", out / "grpo_curves.png",  # (the loss is 0 on average at beta 0)
                ["reward_mean", "iou", "refusal_acc", "completion_len"], title="PIR-GRPO", smooth=10)
    saa_picture(video, cfg, out / "saa.png")


def ground_command(video: str, query: str, checkpoint: Path, cfg: DemoConfig) -> str:
    """The `tempo-fast ground` call that runs the checkpoint with the frames it was trained on."""
    return (f"tempo-fast ground {shlex.quote(str(video))} --query {shlex.quote(query)} "
            f"--model {shlex.quote(str(checkpoint))} --num-frames {cfg.num_frames} --alpha {cfg.alpha} "
            f"--min-pixels {cfg.frame_pixels} --max-pixels {cfg.frame_pixels} --no-decode-resize")
