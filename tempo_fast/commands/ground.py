"""`tempo-fast ground VIDEO --query "..." [--model PATH|tiny] [...]`: ground one query in one video
and print the result of `tempo_fast.infer.ground` as JSON:

    {"windows": [[start, end, score], ...], "refused": false, "refusal_score": 0.0,
     "answer": "<answer>12.0 to 18.5</answer>", "duration": 30.0, "timing": {...}}

The inference flags are generated from `tempo_fast.infer.InferConfig` by `tempo_fast.config` (one
`--kebab-case` flag per field, its comment as help); `--config FILE` (JSON or TOML of InferConfig
fields) is read first and the flags given override it. `tempo-fast predict` uses the same flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and one flag per InferConfig field (tempo_fast.config)."""
    from tempo_fast.config import add_dataclass_arguments
    from tempo_fast.infer import InferConfig

    add_dataclass_arguments(parser, InferConfig)


def infer_config(args: argparse.Namespace):
    """The InferConfig of `--config FILE` overridden by the flags given (other arguments ignored)."""
    from tempo_fast.config import config_from_args
    from tempo_fast.infer import InferConfig

    names = {f.name for f in dataclasses.fields(InferConfig)} | {"config"}
    return config_from_args(InferConfig, argparse.Namespace(**{k: v for k, v in vars(args).items() if k in names}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="the video file")
    parser.add_argument("--query", required=True, help="the sentence to ground")
    parser.add_argument("--indent", type=int, default=None, help="indent the JSON output")
    add_infer_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tempo_fast.infer import ground

    try:
        if not args.query.strip():
            raise ValueError("--query must not be empty")
        config = infer_config(args)
        result = ground(args.video, args.query, config=config)
    except (OSError, ValueError) as err:  # missing or undecodable video, bad settings, empty query
        print(f"tempo-fast ground: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=args.indent))
    return 0
