"""`run_demo(cfg)`: every stage of the demo (see `tempo_fast.demo`), timed, into OUT/demo_metrics.json."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path

from tempo_fast.demo.config import DemoConfig, data_config, eval_records, grpo_config, sft_config

METRICS = ("R1@0.5", "R1@0.7", "mIoU", "refusal_acc", "false_refusal", "refusal_auc")
MODELS = ("sft", "sft_swapped", "grpo", "grpo_swapped", "saa", "uniform", "grpo_no_pir", "no_pir")


def _plain(value):
    """NaN -> None all the way down, so the JSON is strict."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Scorer:
    """Scores checkpoints on one record set: prompts built once (the shared prompt cache), answers
    written to OUT/answers/<name>.jsonl, the evaluation's seconds kept apart from the metrics."""

    def __init__(self, cfg: DemoConfig, out: Path):
        self.cfg, self.answers_dir, self.seconds = cfg, out / "answers", {}
        self.answers_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, checkpoint: Path, records, data_cfg) -> dict:
        from tempo_fast.model import load_model
        from tempo_fast.train.evaluate import evaluate_grounding

        if not records:
            return dict.fromkeys(METRICS, math.nan)
        cfg = self.cfg
        vl = load_model(checkpoint)
        metrics = evaluate_grounding(vl, records, data_cfg=data_cfg, max_new_tokens=cfg.max_new_tokens,
                                     batch_size=cfg.eval_batch_size, bootstrap=cfg.bootstrap, seed=cfg.seed)
        texts, p_none = metrics.pop("answers"), metrics.pop("p_none")
        self.seconds[name] = metrics.pop("seconds")
        with open(self.answers_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for i, (record, text) in enumerate(zip(records, texts)):
                row = {"id": str(record.id), "video": Path(str(record.video_path)).name, "query": record.query,
                       "relevance": record.relevance, "windows": [list(w) for w in record.windows], "answer": text,
                       "p_none": None if p_none is None else round(p_none[i], 6)}
                f.write(json.dumps(row) + "\n")
        return metrics


def machine_info() -> dict:
    """Where the demo ran: CPU model, cores, torch threads, load averages (1, 5, 15 min)."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the renderers, ffmpeg): on a busy
    machine the wall time grows with the load, this much less."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage of the package docstring; returns what demo_metrics.json holds."""
    import torch

    from tempo_fast.data.synthetic import require_ffmpeg
    from tempo_fast.demo.report import draw_plots
    from tempo_fast.train.data import prepare_synthetic
    from tempo_fast.train.evaluate import baselines, swap_videos
    from tempo_fast.train.grpo import train_grpo
    from tempo_fast.train.prompts import shared_prompt_cache
    from tempo_fast.train.sft import train_sft

    require_ffmpeg()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    load_start = _load()
    seconds, cpu_seconds, start, cpu_start = {}, {}, time.perf_counter(), _cpu()

    def lap(stage: str) -> None:
        nonlocal start, cpu_start
        now, cpu = time.perf_counter(), _cpu()
        seconds[stage], cpu_seconds[stage] = round(now - start, 2), round(cpu - cpu_start, 2)
        start, cpu_start = now, cpu
        print(f"[demo] {stage}: {seconds[stage]:.1f} s ({cpu_seconds[stage]:.1f} s CPU)", flush=True)

    saa_data = data_config(cfg)
    _, records, facts = prepare_synthetic(saa_data, progress=cfg.progress)
    if not records[cfg.eval_split]:
        raise ValueError(f"demo: the {cfg.eval_split!r} split is empty; raise num_videos (got {cfg.num_videos})")
    held_out = eval_records(records[cfg.eval_split], cfg, facts)
    swapped = swap_videos(held_out, seed=cfg.seed)  # empty when the split holds one video
    score = Scorer(cfg, out)
    results = {"baselines": baselines(held_out, seed=cfg.seed, bootstrap=cfg.bootstrap)}
    lap("data")

    with shared_prompt_cache():  # every SAA run and evaluation below builds each prompt once
        sft_ckpt = train_sft(sft_config(cfg, saa_data, out / "sft"))
        lap("sft")
        grpo_ckpt = train_grpo(grpo_config(cfg, saa_data, out / "grpo", sft_ckpt))
        lap("grpo")
        results["sft"] = score("sft", sft_ckpt, held_out, saa_data)
        results["grpo"] = score("grpo", grpo_ckpt, held_out, saa_data)
        results["sft_swapped"] = score("sft_swapped", sft_ckpt, swapped, saa_data)
        results["grpo_swapped"] = score("grpo_swapped", grpo_ckpt, swapped, saa_data)
        results["saa"] = dict(results["sft"])
        lap("evaluate")
        if not cfg.ablations:
            return _finish(cfg, out, results, held_out, swapped, (seconds, cpu_seconds), score, grpo_ckpt, load_start)
        no_pir_grpo = train_grpo(grpo_config(cfg, saa_data, out / "ablation_grpo_no_pir", sft_ckpt, pir=False))
        results["grpo_no_pir"] = score("grpo_no_pir", no_pir_grpo, held_out, saa_data)
        lap("ablation_grpo_no_pir")
        plain_data = data_config(cfg, pir=False)
        plain_sft = train_sft(sft_config(cfg, plain_data, out / "ablation_no_pir_sft"))
        plain_grpo = train_grpo(grpo_config(cfg, plain_data, out / "ablation_no_pir_grpo", plain_sft, pir=False))
        results["no_pir"] = score("no_pir", plain_grpo, held_out, saa_data)
        lap("ablation_no_pir")
    with shared_prompt_cache():  # the uniform frames' prompts, dropped after
        uniform_data = data_config(cfg, sampling="uniform")
        uniform_ckpt = train_sft(sft_config(cfg, uniform_data, out / "ablation_uniform_sft"))
        results["uniform"] = score("uniform", uniform_ckpt, held_out, uniform_data)
        lap("ablation_uniform")

    draw_plots(out, str(next(r for r in held_out if r.relevance == "relevant").video_path), cfg)
    lap("plots")
    return _finish(cfg, out, results, held_out, swapped, (seconds, cpu_seconds), score, grpo_ckpt, load_start)


def _finish(cfg, out, results, held_out, swapped, times, score, grpo_ckpt, load_start) -> dict:
    """demo_metrics.json from the results so far (module docstring of tempo_fast.demo)."""
    from tempo_fast.demo.report import ground_command

    example = next(r for r in held_out if r.relevance == "relevant")
    counts = {kind: sum(r.relevance == kind for r in held_out) for kind in ("relevant", "irrelevant", "partial")}
    report = {name: _plain(results[name]) for name in MODELS if name in results}
    report["baselines"] = _plain(results["baselines"])
    report["setup"] = {
        "config": dataclasses.asdict(cfg), "eval_split": cfg.eval_split, "eval_counts": counts,
        "swapped_count": len(swapped),
        "ablation": "saa = the main SFT run; uniform = the same SFT recipe with uniform frames (same frames and "
                    "pixels per video); grpo_no_pir = the GRPO recipe from the same SFT checkpoint, relevant samples "
                    "only; no_pir = SFT and GRPO both without any PIR sample",
        "intervals": f"95% percentile bootstrap over records within each relevance kind, {cfg.bootstrap} "
                     f"resamples, seed {cfg.seed}"}
    report["machine"] = {**machine_info(), "load_start": load_start, "load_end": _load()}
    seconds, cpu_seconds = times
    report["seconds"] = {**seconds, "total": round(sum(seconds.values()), 2)}
    report["cpu_seconds"] = {**cpu_seconds, "total": round(sum(cpu_seconds.values()), 2)}
    report["evaluation_seconds"] = score.seconds
    report["checkpoint"] = str(grpo_ckpt)
    report["ground_command"] = ground_command(str(example.video_path), example.query, grpo_ckpt, cfg)
    (out / "demo_metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
