"""`tempo-fast demo [--out runs/demo] [--quick]`: synthetic data -> SFT -> PIR-GRPO -> held-out
evaluation with baselines and ablations (`tempo_fast.demo`). Flags come from
`tempo_fast.demo.DemoConfig`; `--quick` swaps in small sizes (`tempo_fast.demo.QUICK`) for every
size flag not given explicitly. `--markdown FILE [FILE ...]` prints the README table of finished
runs' demo_metrics.json (the later files give the spread) and trains nothing.

Without FFmpeg it stops at once with one line saying how to install it."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tempo_fast.config import add_dataclass_arguments
    from tempo_fast.demo import DemoConfig

    parser.add_argument("--markdown", dest="_markdown", nargs="+", metavar="FILE", default=None,
                        help="print the README table of these demo_metrics.json files and exit")
    add_dataclass_arguments(parser, DemoConfig)


def _markdown(paths) -> int:
    import json
    from pathlib import Path

    from tempo_fast.demo import format_markdown

    reports = []
    for path in paths:
        try:
            reports.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"tempo-fast demo --markdown: cannot read {path}: {exc}") from None
    try:
        print(format_markdown(reports))
    except KeyError as exc:
        raise SystemExit(f"tempo-fast demo --markdown: not a demo_metrics.json (no {exc})") from None
    return 0


def check_ffmpeg() -> None:
    """Exit with one line when FFmpeg is missing: the ffmpeg tool (rendering the synthetic set) or
    the libraries torchcodec decodes with."""
    from tempo_fast.data.synthetic import INSTALL_FFMPEG, FFmpegNotFound, require_ffmpeg

    try:
        require_ffmpeg()
    except FFmpegNotFound as exc:
        raise SystemExit(f"tempo-fast demo: {exc}") from None
    try:
        import torchcodec.decoders  # noqa: F401  (loads FFmpeg's libraries)
    except ImportError as exc:
        if "torchcodec" in str(exc) and "No module" in str(exc):
            raise SystemExit("tempo-fast demo: torchcodec is not installed: pip install 'tempo_fast[video]'") from None
        raise SystemExit(f"tempo-fast demo: torchcodec cannot load FFmpeg's libraries: {INSTALL_FFMPEG}") from None
    except (OSError, RuntimeError):
        raise SystemExit(f"tempo-fast demo: torchcodec cannot load FFmpeg's libraries: {INSTALL_FFMPEG}") from None


def run(args: argparse.Namespace) -> int:
    from tempo_fast.config import config_from_args
    from tempo_fast.demo import DemoConfig, format_table, quick_config, run_demo

    if args._markdown:
        return _markdown(args._markdown)
    try:
        cfg = config_from_args(DemoConfig, args)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"tempo-fast demo: {exc}") from None
    if cfg.quick:
        cfg = quick_config(cfg, {k for k in vars(args) if k not in ("config", "_markdown")})
    check_ffmpeg()
    report = run_demo(cfg)
    print()
    print(f"held-out {cfg.eval_split} split ({report['setup']['eval_counts']}), percent:")
    print(format_table(report))
    print(f"\nwrote {cfg.out}/demo_metrics.json, answers/, sft_curves.png, grpo_curves.png, saa.png "
          f"in {report['seconds']['total']:.0f} s")
    print(f"trained checkpoint: {report['checkpoint']}")
    print("try it:")
    print(f"  {report['ground_command']}")
    return 0
