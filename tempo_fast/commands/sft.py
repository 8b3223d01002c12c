"""`tempo-fast sft [--config FILE] [--run-out-dir DIR] [--run-steps N] ...`: supervised fine-tuning
on the synthetic grounding set (generated into --data-root if missing). Flags come from
`tempo_fast.train.config.SFTConfig` (see `tempo-fast sft --help`); under torchrun the same
command trains data-parallel: `torchrun --nproc_per_node N -m tempo_fast sft ...`."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tempo_fast.config import add_dataclass_arguments
    from tempo_fast.train.config import SFTConfig

    add_dataclass_arguments(parser, SFTConfig)


def run(args: argparse.Namespace) -> int:
    from tempo_fast.train.config import SFTConfig
    from tempo_fast.train.loop import run_command
    from tempo_fast.train.sft import train_sft

    # train_sft prints the resolved config first and the checkpoint folder last (rank 0)
    run_command("sft", SFTConfig, train_sft, args)
    return 0
