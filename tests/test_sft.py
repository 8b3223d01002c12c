"""SFT loop: the loss goes down, resume is exact (in-process split and a SIGKILLed subprocess),
and two gloo processes train the same global batch as one process."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tempo_fast.train.config import DataConfig, ModelConfig, OptimConfig, RunConfig, SFTConfig  # noqa: E402
from tempo_fast.train.sft import train_sft  # noqa: E402

STEPS = 6


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from tempo_fast.train.data import prepare_synthetic
    cfg = _cfg(tmp_path_factory.mktemp("synth"), "unused").data
    prepare_synthetic(cfg)
    return cfg.root


def _cfg(data_root, out_dir, **run) -> SFTConfig:
    run = {"out_dir": str(out_dir), "steps": STEPS, "batch_size": 2, "grad_accum": 2, "log_every": 1,
           "save_every": 2, "progress": False, "device": "cpu", **run}
    return SFTConfig(model=ModelConfig(name="tiny"),
                     data=DataConfig(root=str(data_root), num_videos=6, clip_size=32, num_frames=4, max_samples=6),
                     optim=OptimConfig(lr=3e-3, warmup_steps=1), run=RunConfig(**run))


def _losses(out_dir) -> list[float]:
    rows = [json.loads(line) for line in open(Path(out_dir) / "metrics.jsonl")]
    return [r["loss"] for r in sorted(rows, key=lambda r: r["step"])]


def _sft_argv(cfg: SFTConfig) -> list[str]:
    from tempo_fast.config import save_config
    path = save_config(cfg, Path(cfg.run.out_dir).parent / (Path(cfg.run.out_dir).name + "_cfg.json"))
    return ["-m", "tempo_fast", "sft", "--config", str(path)]


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    final = train_sft(_cfg(data_root, out))
    return out, final


def test_straight_run_learns(straight):
    out, final = straight
    losses = _losses(out)
    assert len(losses) == STEPS and all(l == l for l in losses)
    assert losses[-1] < losses[0]
    assert final.name == f"step_{STEPS:06d}" and (final / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["run"]["steps"] == STEPS


def test_split_run_resumes_exactly(straight, data_root, tmp_path):
    first = train_sft(_cfg(data_root, tmp_path, stop_after=3))
    assert first.name == "step_000003"
    train_sft(_cfg(data_root, tmp_path))
    assert _losses(tmp_path) == _losses(straight[0])  # exact, not approximate


def test_killed_run_resumes_exactly(straight, data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "run")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, *_sft_argv(cfg)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    latest = tmp_path / "run" / "latest"
    deadline = time.time() + 120
    while not latest.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = latest.read_text().strip()
    assert killed_at != f"step_{STEPS:06d}", "the run finished before it could be killed"
    resumed = subprocess.run([sys.executable, *_sft_argv(cfg)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from" in resumed.stdout and resumed.stdout.strip().endswith(f"step_{STEPS:06d}")
    assert _losses(tmp_path / "run") == _losses(straight[0])


def test_two_gloo_processes_match_one(data_root, tmp_path):
    """World 2 x batch 2 sees the same global batch as world 1 x batch 4: same losses, one checkpoint."""
    steps = 2
    single = _cfg(data_root, tmp_path / "one", steps=steps, batch_size=4, grad_accum=1, save_every=0)
    train_sft(single)
    double = _cfg(data_root, tmp_path / "two", steps=steps, batch_size=2, grad_accum=1, save_every=0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             *_sft_argv(double)], env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("checkpoint:") == 1  # printed by rank 0 only
    assert sorted(p.name for p in (tmp_path / "two").glob("step_*")) == [f"step_{steps:06d}"]
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
