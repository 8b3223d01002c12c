"""`tempo-fast ground VIDEO --query "..." [--model PATH|tiny] [...]`: ground one query in one video
and print the result of `tempo_fast.infer.ground` as JSON:

    {"windows": [[start, end, score], ...], "refused": false, "refusal_score": 0.0,
     "answer": "<answer>12.0 to 18.5</answer>", "duration": 30.0, "timing": {...}}

The inference flags are generated from `tempo_fast.infer.InferConfig` (one `--kebab-case` flag per
field, its comment as help); `--config FILE` (a JSON object of InferConfig fields) is read first
and the flags given override it. `tempo-fast predict` uses the same flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
import typing

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


def _field_help(cls) -> dict[str, str]:
    """The one-line comment of each dataclass field, read from the class source."""
    return {m.group(1): m.group(2) for line in inspect.getsource(cls).splitlines()
            if (m := _FIELD_COMMENT.match(line))}


def _value_type(hint):
    """(the type to parse, whether None is allowed) of a field's type hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def add_config_arguments(parser: argparse.ArgumentParser, cls=None) -> None:
    """`--config FILE` and one flag per field of the dataclass `cls` (default: InferConfig)."""
    from tempo_fast.infer import InferConfig

    cls = InferConfig if cls is None else cls
    helps, hints = _field_help(cls), typing.get_type_hints(cls)
    group = parser.add_argument_group("inference settings (InferConfig)")
    group.add_argument("--config", default=None, metavar="FILE",
                       help="JSON object of InferConfig fields, read first; flags override it")
    for f in dataclasses.fields(cls):
        kind, optional = _value_type(hints[f.name])
        text = f"{helps.get(f.name, f.name)} (default: {f.default})"
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        else:
            parse = (lambda s, k=kind: None if s.lower() == "none" else k(s)) if optional else kind
            group.add_argument(flag, dest=f.name, type=parse, default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=text)


def config_from_args(args: argparse.Namespace, cls=None):
    """The dataclass from `--config FILE` (if given) overridden by the flags given."""
    from tempo_fast.infer import InferConfig

    cls = InferConfig if cls is None else cls
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    if getattr(args, "config", None):
        with open(args.config, encoding="utf-8") as f:
            loaded = json.load(f)
        if not isinstance(loaded, dict) or set(loaded) - names:
            unknown = sorted(set(loaded) - names) if isinstance(loaded, dict) else loaded
            raise ValueError(f"--config {args.config}: expected a JSON object of {cls.__name__} fields, "
                             f"unknown: {unknown}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k in names})
    return cls(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="the video file")
    parser.add_argument("--query", required=True, help="the sentence to ground")
    parser.add_argument("--indent", type=int, default=None, help="indent the JSON output")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tempo_fast.infer import ground

    try:
        if not args.query.strip():
            raise ValueError("--query must not be empty")
        config = config_from_args(args)
        result = ground(args.video, args.query, config=config)
    except (OSError, ValueError) as err:  # missing or undecodable video, bad settings, empty query
        print(f"tempo-fast ground: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=args.indent))
    return 0
