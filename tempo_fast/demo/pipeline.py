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


class Clock:
    """Wall and CPU seconds per stage, printed as each ends."""

    def __init__(self, prefix: str = "demo"):
        self.prefix, self.seconds, self.cpu_seconds = prefix, {}, {}
        self._wall, self._cpu = time.perf_counter(), _cpu()

    def lap(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), _cpu()
        self.seconds[stage], self.cpu_seconds[stage] = round(wall - self._wall, 2), round(cpu - self._cpu, 2)
        self._wall, self._cpu = wall, cpu
        print(f"[{self.prefix}] {stage}: {self.seconds[stage]:.1f} s ({self.cpu_seconds[stage]:.1f} s CPU)", flush=True)


def lane_main(cfg: DemoConfig, held_out: list, swapped: list, clock: Clock, score: Scorer) -> dict:
    """SFT with PIR -> PIR-GRPO, their scores (and on swapped videos), GRPO without PIR from the same SFT."""
    from tempo_fast.train.grpo import train_grpo
    from tempo_fast.train.prompts import shared_prompt_cache
    from tempo_fast.train.sft import train_sft

    out, saa_data, results = Path(cfg.out), data_config(cfg), {}
    with shared_prompt_cache():  # every run and evaluation here builds each prompt once
        sft_ckpt = train_sft(sft_config(cfg, saa_data, out / "sft"))
        clock.lap("sft")
        grpo_ckpt = train_grpo(grpo_config(cfg, saa_data, out / "grpo", sft_ckpt))
        clock.lap("grpo")
        results["sft"] = score("sft", sft_ckpt, held_out, saa_data)
        results["grpo"] = score("grpo", grpo_ckpt, held_out, saa_data)
        results["sft_swapped"] = score("sft_swapped", sft_ckpt, swapped, saa_data)
        results["grpo_swapped"] = score("grpo_swapped", grpo_ckpt, swapped, saa_data)
        results["saa"] = dict(results["sft"])
        clock.lap("evaluate")
        if cfg.ablations:
            no_pir_grpo = train_grpo(grpo_config(cfg, saa_data, out / "ablation_grpo_no_pir", sft_ckpt, pir=False))
            results["grpo_no_pir"] = score("grpo_no_pir", no_pir_grpo, held_out, saa_data)
            clock.lap("ablation_grpo_no_pir")
    return {"results": results, "checkpoint": str(grpo_ckpt)}


def lane_ablations(cfg: DemoConfig, held_out: list, swapped: list, clock: Clock, score: Scorer) -> dict:
    """The pipeline without any PIR sample (SFT and GRPO), and the SFT recipe on uniform frames."""
    from tempo_fast.train.grpo import train_grpo
    from tempo_fast.train.prompts import shared_prompt_cache
    from tempo_fast.train.sft import train_sft

    out, results = Path(cfg.out), {}
    with shared_prompt_cache():
        plain_data = data_config(cfg, pir=False)
        plain_sft = train_sft(sft_config(cfg, plain_data, out / "ablation_no_pir_sft"))
        plain_grpo = train_grpo(grpo_config(cfg, plain_data, out / "ablation_no_pir_grpo", plain_sft, pir=False))
        results["no_pir"] = score("no_pir", plain_grpo, held_out, data_config(cfg))
        clock.lap("ablation_no_pir")
    with shared_prompt_cache():
        uniform_data = data_config(cfg, sampling="uniform")
        uniform_ckpt = train_sft(sft_config(cfg, uniform_data, out / "ablation_uniform_sft"))
        results["uniform"] = score("uniform", uniform_ckpt, held_out, uniform_data)
        clock.lap("ablation_uniform")
    return {"results": results}


LANES = {"main": lane_main, "ablations": lane_ablations}


def run_lane(name: str, cfg: DemoConfig, held_out: list, swapped: list) -> dict:
    """One lane of independent runs (in this process or a worker): its results, stage times and
    the evaluations' seconds."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    clock, score = Clock(f"demo:{name}"), Scorer(cfg, Path(cfg.out))
    done = LANES[name](cfg, held_out, swapped, clock, score)
    return {**done, "seconds": clock.seconds, "cpu_seconds": clock.cpu_seconds, "evaluation_seconds": score.seconds}


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage of the package docstring; returns what demo_metrics.json holds.

    After the data, the runs go in two lanes that share nothing but the data on disk ("main": SFT,
    GRPO, GRPO without PIR; "ablations": the no-PIR pipeline, uniform frames), in `workers`
    processes (fork on Linux) or one after the other in this process (workers=1): every number
    is the same either way, only the wall time differs."""
    import concurrent.futures as cf
    import multiprocessing
    import sys

    import torch

    from tempo_fast.data.synthetic import require_ffmpeg
    from tempo_fast.demo.report import draw_plots
    from tempo_fast.train.data import prepare_synthetic
    from tempo_fast.train.evaluate import baselines, swap_videos

    require_ffmpeg()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    load_start, clock = _load(), Clock()
    _, records, facts = prepare_synthetic(data_config(cfg), progress=cfg.progress)
    if not records[cfg.eval_split]:
        raise ValueError(f"demo: the {cfg.eval_split!r} split is empty; raise num_videos (got {cfg.num_videos})")
    held_out = eval_records(records[cfg.eval_split], cfg, facts)
    swapped = swap_videos(held_out, seed=cfg.seed)  # empty when the split holds one video
    results = {"baselines": baselines(held_out, seed=cfg.seed, bootstrap=cfg.bootstrap, train=records["train"])}
    clock.lap("data")

    lanes = ["main"] + (["ablations"] if cfg.ablations else [])
    if cfg.workers > 1 and len(lanes) > 1:
        # fork before this process ran any torch op (no intra-op threads to inherit)
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with cf.ProcessPoolExecutor(min(cfg.workers, len(lanes)), mp_context=ctx) as pool:
            futures = {name: pool.submit(run_lane, name, cfg, held_out, swapped) for name in lanes}
            done = {name: future.result() for name, future in futures.items()}
    else:
        done = {name: run_lane(name, cfg, held_out, swapped) for name in lanes}
    clock.lap("train_and_evaluate")
    for lane in done.values():
        results.update(lane["results"])
    if cfg.ablations:
        draw_plots(out, str(next(r for r in held_out if r.relevance == "relevant").video_path), cfg)
        clock.lap("plots")
    return _finish(cfg, out, results, held_out, swapped, clock, done, load_start)


def _finish(cfg, out, results, held_out, swapped, clock: Clock, lanes: dict, load_start) -> dict:
    """demo_metrics.json from the results (module docstring of tempo_fast.demo)."""
    from tempo_fast.demo.report import ground_command

    example = next(r for r in held_out if r.relevance == "relevant")
    checkpoint = lanes["main"]["checkpoint"]
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
    report["seconds"] = {**clock.seconds, "total": round(sum(clock.seconds.values()), 2)}
    report["cpu_seconds"] = {**clock.cpu_seconds, "total": round(sum(clock.cpu_seconds.values()), 2)}
    report["lane_seconds"] = {name: {"seconds": lane["seconds"], "cpu_seconds": lane["cpu_seconds"]}
                              for name, lane in lanes.items()}
    report["evaluation_seconds"] = {k: v for lane in lanes.values() for k, v in lane["evaluation_seconds"].items()}
    report["checkpoint"] = checkpoint
    report["ground_command"] = ground_command(str(example.video_path), example.query, checkpoint, cfg)
    (out / "demo_metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
