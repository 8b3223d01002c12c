"""`tempo-fast demo [--out runs/demo] [--quick]`: synthetic data -> SFT -> PIR-GRPO -> held-out
evaluation with baselines and ablations (`tempo_fast.demo`). Flags come from
`tempo_fast.demo.DemoConfig`; `--quick` swaps in small sizes (`tempo_fast.demo.QUICK`) for every
size flag not given explicitly."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tempo_fast.config import add_dataclass_arguments
    from tempo_fast.demo import DemoConfig

    add_dataclass_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    from tempo_fast.config import config_from_args
    from tempo_fast.demo import DemoConfig, format_table, quick_config, run_demo

    try:
        cfg = config_from_args(DemoConfig, args)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"tempo-fast demo: {exc}") from None
    if cfg.quick:
        cfg = quick_config(cfg, {k for k in vars(args) if k != "config"})
    report = run_demo(cfg)
    print()
    print(f"held-out {cfg.eval_split} split ({report['setup']['eval_counts']}), percent:")
    print(format_table(report))
    print(f"\nwrote {cfg.out}/demo_metrics.json, sft_curves.png, grpo_curves.png, saa.png "
          f"in {report['seconds']['total']:.0f} s")
    print(f"trained checkpoint: {report['checkpoint']}")
    print("try it:")
    print(f"  {report['ground_command']}")
    return 0
