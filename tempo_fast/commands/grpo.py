"""`tempo-fast grpo [--config F] [flags]`: PIR-GRPO training (tempo_fast.train.grpo).

Flags come from `tempo_fast.train.config.GRPOConfig` (`--init-from`, `--num-generations`,
`--optim-lr`, `--run-steps`, `--data-root`, ...); `--config FILE` (JSON or TOML) is read first and
flags override it. Under `torchrun` every process runs this same command.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tempo_fast.config import add_dataclass_arguments
    from tempo_fast.train.config import GRPOConfig

    add_dataclass_arguments(parser, GRPOConfig)


def run(args: argparse.Namespace) -> int:
    from tempo_fast.train.config import GRPOConfig
    from tempo_fast.train.grpo import train_grpo
    from tempo_fast.train.loop import run_command

    final = run_command("grpo", GRPOConfig, train_grpo, args)
    print(f"tempo-fast grpo: final checkpoint {final}")
    return 0
