"""`tempo-fast pretrain [--steps N] [--out-dir DIR] [--ship] ...`: pretrain the tiny preset on general
vision-language tasks about synthetic clips (rendered into --data-root if missing), the model the
demo starts from. Flags come from `tempo_fast.pretrain.config.PretrainConfig` (`tempo-fast
pretrain --help`). Resumes from --out-dir's latest checkpoint; at the end writes
OUT/tiny.safetensors and OUT/manifest.json, and with --ship copies both into the package
(tempo_fast/model/weights), which is what `load_model("tiny")` reads."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tempo_fast.config import add_dataclass_arguments
    from tempo_fast.pretrain.config import PretrainConfig

    add_dataclass_arguments(parser, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from tempo_fast.config import config_from_args, print_config
    from tempo_fast.pretrain.config import PretrainConfig
    from tempo_fast.pretrain.loop import train_pretrain
    from tempo_fast.pretrain.manifest import write_release

    try:
        cfg = config_from_args(PretrainConfig, args)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"tempo-fast pretrain: {exc}") from None
    print_config(cfg)
    result = train_pretrain(cfg)
    if result["step"] < cfg.steps:  # stopped early (--stop-after): no release yet
        print(f"stopped at step {result['step']} of {cfg.steps}; checkpoint: {result['checkpoint']}", flush=True)
        return 0
    manifest = write_release(cfg, result, command=["tempo-fast", "pretrain", *sys.argv[2:]])
    print(json.dumps(manifest["metrics"], indent=1), flush=True)
    return 0
