"""`tempo-fast predict --annotations F --videos DIR --model PATH|tiny --out preds.jsonl`: answer every
query of a data set into a prediction file in the official QVHighlights layout, then score it:

    tempo-fast predict --annotations data/test.jsonl --videos data/videos --model tiny --out preds.jsonl
    tempo-fast eval --pred preds.jsonl --gt data/test.jsonl

Queries are answered `--batch-size B` per forward (default chosen for the device: 8 on CPU, 16 on
CUDA; `--batch-tokens` caps the padded prompt tokens of a batch) while `--workers` threads decode
and preprocess up to `--prefetch` queries ahead; every B gives the same predictions (each query
samples from its own seeded generator). The summary printed at the end says where the time went
(decode_s, preprocess_s in the workers; prefill_s, generate_s in the model; wait_s on the workers).
A rerun skips the qids already in --out (`--retry-errors` answers the error records again).
Several GPUs: `torchrun --nproc-per-node 8 -m tempo_fast predict ...` (rank r answers every r-th
query; rank 0 merges the shards into --out). Ranks run as separate processes without torchrun:
give each `--rank R --world-size W`, then merge with `tempo-fast predict --out preds.jsonl --merge`.
Inference flags as in `tempo-fast ground` (generated from InferConfig).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from tempo_fast.commands.ground import add_infer_arguments, infer_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", default=None, help="annotation file (QVHighlights JSONL or Charades-STA)")
    parser.add_argument("--videos", default=None, help="folder holding the videos (<vid>.mp4, .mkv, ...)")
    parser.add_argument("--out", required=True, help="prediction JSONL, appended to and resumed")
    parser.add_argument("--retry-errors", action="store_true", help="answer again the queries with error records")
    parser.add_argument("--rank", type=int, default=None, help="this process's rank without torchrun")
    parser.add_argument("--world-size", type=int, default=None, help="number of ranks without torchrun")
    parser.add_argument("--merge", action="store_true",
                        help="only merge the rank shards of --out (written with --rank/--world-size) into --out")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")
    add_infer_arguments(parser)


def _shard_ranks(out: Path) -> list[int]:
    pattern = re.compile(re.escape(out.stem) + r"\.rank(\d+)" + re.escape(out.suffix) + "$")
    return sorted(int(m.group(1)) for p in out.parent.glob(f"{out.stem}.rank*{out.suffix}")
                  if (m := pattern.match(p.name)))


def _merge(args) -> int:
    from tempo_fast.infer import merge_shards

    out = Path(args.out)
    ranks = _shard_ranks(out)
    world = args.world_size or len(ranks)
    if not ranks or ranks != list(range(world)):
        raise ValueError(f"--merge: expected shards rank0..rank{world - 1} beside {out}, found ranks {ranks}")
    order = None
    if args.annotations:
        from tempo_fast.data import load_annotations
        order = [r.id for r in load_annotations(args.annotations)]
    merge_shards(out, world, order)
    print(f"merged {world} shards into {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.merge:
            return _merge(args)
        if not args.annotations or not args.videos:
            raise ValueError("--annotations and --videos are required (unless --merge)")
        if not Path(args.videos).is_dir():
            raise FileNotFoundError(f"--videos {args.videos}: no such folder")
        if (args.rank is None) != (args.world_size is None):
            raise ValueError("give --rank and --world-size together")
        from tempo_fast.infer import predict

        config = infer_config(args)
        if args.rank is not None or int(os.environ.get("RANK", 0)) == 0:
            from tempo_fast.config import print_config
            print_config(config)
        summary = predict(args.annotations, args.videos, out=args.out, config=config, rank=args.rank,
                          world_size=args.world_size, retry_errors=args.retry_errors, progress=args.progress)
    except (OSError, ValueError) as err:  # missing files, bad annotations or settings
        print(f"tempo-fast predict: error: {err}", file=sys.stderr)
        return 2
    if summary["rank"] == 0 or args.rank is not None:  # torchrun: rank 0 speaks for all
        print(json.dumps(summary))
        if summary["out"] == args.out:
            print(f"score it: tempo-fast eval --pred {args.out} --gt {args.annotations}")
    return 0
