"""The release of a pretraining run: the final weights as one safetensors file and its manifest.

`write_release(cfg, result, command)` copies the last checkpoint's model.safetensors to
OUT/tiny.safetensors and writes OUT/manifest.json:
{"command", "config" (the PretrainConfig), "model" (the architecture: text and vision sizes,
init std), "seed", "steps", "data" (generator seed and settings of the pretraining clips, the
frames per clip and their size, which clips are held out), "git_sha", "sha256" (of the weights
file), "tokenizer_sha256" (`tempo_fast.model.tiny.tokenizer_digest`), "bytes", "cpu_seconds",
"metrics" (held-out, `tempo_fast.pretrain.evaluate`)}. With `cfg.ship` both files are copied into
tempo_fast/model/weights, the `tiny` preset's weights.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path


def git_sha() -> str | None:
    """The package checkout's commit (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def architecture(config) -> dict:
    """The sizes that define the model (from its Qwen2_5_VLConfig)."""
    from tempo_fast.model.tiny import INIT_STD

    t, v = config.text_config, config.vision_config
    return {"family": "qwen2_5_vl", "init_std": INIT_STD,
            "text": {"hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                     "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
                     "num_key_value_heads": t.num_key_value_heads, "vocab_size": t.vocab_size},
            "vision": {"depth": v.depth, "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                       "num_heads": v.num_heads, "patch_size": v.patch_size, "out_hidden_size": v.out_hidden_size}}


def build_manifest(cfg, result: dict, weights: Path, command: list[str]) -> dict:
    import dataclasses

    from tempo_fast.model import load_model
    from tempo_fast.model.tiny import file_sha256, tokenizer_digest

    vl = load_model(result["checkpoint"])
    synth = cfg.synth_config()
    return {"command": list(command), "config": dataclasses.asdict(cfg), "model": architecture(vl.config),
            "seed": cfg.seed, "steps": result["step"],
            "data": {"generator": synth.content_fields(), "num_videos": synth.num_videos,
                     "frames_per_clip": cfg.num_frames, "frame_size": cfg.frame_size,
                     "held_out": f"the val and test splits of this set (first {cfg.eval_clips} clips)"},
            "git_sha": git_sha(), "sha256": file_sha256(weights), "tokenizer_sha256": tokenizer_digest(vl.tokenizer),
            "bytes": weights.stat().st_size, "cpu_seconds": round(result["cpu_seconds"], 1),
            "metrics": {k: round(v, 4) for k, v in result["metrics"].items()}}


def write_release(cfg, result: dict, *, command: list[str]) -> dict:
    """OUT/tiny.safetensors + OUT/manifest.json from the run's last checkpoint (and the package's
    copies with cfg.ship); returns the manifest."""
    from tempo_fast.model.tiny import MANIFEST_FILE, WEIGHTS_FILE

    out = Path(cfg.out_dir)
    weights = out / "tiny.safetensors"
    shutil.copyfile(Path(result["checkpoint"]) / "model.safetensors", weights)
    manifest = build_manifest(cfg, result, weights, command)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if cfg.ship:
        WEIGHTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        for src, dst in ((weights, WEIGHTS_FILE), (out / "manifest.json", MANIFEST_FILE)):
            tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    return manifest
