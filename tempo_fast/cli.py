"""The `tempo-fast` command: one sub-command per module in `tempo_fast/commands/`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`. Only the module of
the command being run is imported, so `tempo-fast eval` never pays for torch video libraries
and `tempo-fast --help` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "bench": ("tempo_fast.commands.bench", "run the benchmarks and append their rows to benchmarks/results/*.csv"),
    "demo": ("tempo_fast.commands.demo", "synthetic data -> SFT -> PIR-GRPO -> held-out evaluation, baselines and ablations"),
    "eval": ("tempo_fast.commands.eval", "score a prediction file against ground truth (QVHighlights or Charades-STA)"),
    "ground": ("tempo_fast.commands.ground", "ground one query in one video and print the scored windows as JSON"),
    "grpo": ("tempo_fast.commands.grpo", "PIR-GRPO training after SFT: rollouts, PIR rewards, fused GRPO loss (torchrun-ready)"),
    "pretrain": ("tempo_fast.commands.pretrain", "pretrain the tiny vision-language model on synthetic clips (the demo's starting point)"),
    "predict": ("tempo_fast.commands.predict", "answer every query of a data set into a prediction JSONL (resumable, multi-GPU)"),
    "saa": ("tempo_fast.commands.saa", "draw a video's SAA variation curve and chosen frames to a PNG"),
    "sft": ("tempo_fast.commands.sft", "supervised fine-tuning on teacher-forced grounding answers (resumable, torchrun)"),
    "synth": ("tempo_fast.commands.synth", "render the synthetic grounding set (videos + QVHighlights-layout annotations)"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="tempo-fast",
        description="Temporal video grounding with video-LLMs: kernels, sampling, training, inference.",
        epilog=f"commands:\n{lines}\n\nrun 'tempo-fast COMMAND --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    top.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv[:1])  # prints help, or the error naming the unknown command
        return 2
    name = argv[0]
    module_name, text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"tempo-fast {name}", description=text,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
