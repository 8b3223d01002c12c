"""Command-line flags and config files from (nested) dataclasses.

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, SFTConfig)
    cfg = config_from_args(SFTConfig, parser.parse_args())   # or parse_config(SFTConfig, argv)

Flags: every field gets `--kebab-case`; a nested dataclass field's fields get its name as a prefix
(`optim.lr` -> `--optim-lr`, `run.steps` -> `--run-steps`). Booleans are `--flag/--no-flag`
(`argparse.BooleanOptionalAction`), `Literal[...]` fields get `choices`, tuples take several
values (`--optim-betas 0.9 0.99`), an optional field reads `none` as None. Help text is the
field's `metadata={"help": ...}` or else the one-line comment after (or just above) the field in
its class's source. `--config FILE` (JSON, or TOML by the `.toml` suffix) holds the same nested
layout (`{"optim": {"lr": 1e-3}}`); it is loaded first and flags given on the command line
override it, so only flags actually given count (their argparse default is SUPPRESS).

Errors name the bad key or value and what was expected: unknown keys in a file, a value of the
wrong type, a malformed file. Nothing here runs at import time.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import os
import tokenize
import types
import typing
from pathlib import Path

_NONE_WORDS = ("none", "null")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _field_comments(cls) -> dict[str, str]:
    """{field name: the comment after it on its line, or on the line just above}."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if ":" not in stripped or stripped.startswith(("#", "def ", "class ", "@", '"', "'")):
            continue
        name = stripped.split(":", 1)[0].strip()
        if not name.isidentifier():
            continue
        text = comments.get(number)
        if text is None and number - 1 in comments and lines[number - 2].strip().startswith("#"):
            text = comments[number - 1]
        if text:
            out.setdefault(name, text)
    return out


def _unwrap_optional(tp):
    """(inner type, optional?) for `X | None` / `Optional[X]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
        raise TypeError(f"config: union type {tp} is not supported (only X | None)")
    return tp, False


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _is_config(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _scalar_parser(tp, flag: str):
    """A function str -> value of type `tp` (int, float, str, Path)."""
    if tp is bool:
        def parse_bool(text: str) -> bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"{flag} expects true/false, got {text!r}")
        return parse_bool
    if tp in (int, float, str, Path):
        def parse(text: str):
            try:
                return tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{flag} expects {tp.__name__}, got {text!r}") from None
        return parse
    raise TypeError(f"config: field type {tp!r} of {flag} is not supported")


def _optional_parser(parse, flag: str):
    def parse_optional(text: str):
        return None if text.lower() in _NONE_WORDS else parse(text)
    return parse_optional


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, *, prefix: str = "",
                            defaults=None) -> None:
    """Add one flag per (nested) field of dataclass `cls` to `parser` (see the module docstring).

    Each flag's dest is the field's dotted path (`optim.lr`), its default SUPPRESS: the namespace
    holds only the flags given. Adds `--config FILE` once, at the top level.
    """
    if not _is_config(cls):
        raise TypeError(f"add_dataclass_arguments: {cls!r} is not a dataclass")
    if not prefix:
        parser.add_argument("--config", metavar="FILE", default=None,
                            help="JSON or TOML file with the config (nested like the flags); flags override it")
    group = parser.add_argument_group(prefix.rstrip(".") or cls.__name__)
    hints, comments = _hints(cls), _field_comments(cls)
    if defaults is None and all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                                for f in dataclasses.fields(cls)):
        defaults = cls()  # for the help text only
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[f.name])
        dest = prefix + f.name
        if _is_config(tp):
            add_dataclass_arguments(parser, tp, prefix=dest + ".",
                                    defaults=getattr(defaults, f.name) if defaults is not None else None)
            continue
        flag = "--" + _kebab(dest.replace(".", "-"))
        default = getattr(defaults, f.name) if defaults is not None else None
        help_text = f.metadata.get("help") or comments.get(f.name) or ""
        help_text = f"{help_text} (default: {default!r})" if help_text else f"default: {default!r}"
        kwargs = dict(dest=dest, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
        origin = typing.get_origin(tp)
        if tp is bool and not optional:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif origin is typing.Literal:
            choices = typing.get_args(tp)
            kinds = {type(c) for c in choices}
            parse = _scalar_parser(kinds.pop() if len(kinds) == 1 else str, flag)
            group.add_argument(flag, type=_optional_parser(parse, flag) if optional else parse,
                               choices=choices + ((None,) if optional else ()), metavar="{" + ",".join(map(str, choices)) + "}",
                               **kwargs)
        elif origin is tuple:
            args = typing.get_args(tp)
            item = args[0]
            nargs = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
            group.add_argument(flag, type=_scalar_parser(item, flag), nargs=nargs, metavar=item.__name__.upper(),
                               **kwargs)
        else:
            parse = _scalar_parser(tp, flag)
            group.add_argument(flag, type=_optional_parser(parse, flag) if optional else parse,
                               metavar=tp.__name__.upper(), **kwargs)


def load_config_file(path) -> dict:
    """The nested dict in a JSON or TOML (by suffix `.toml`) config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, json.JSONDecodeError) as err:  # tomllib.TOMLDecodeError is a ValueError
        raise ValueError(f"config file {str(path)!r} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: "
                         f"{err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold an object/table, got {type(data).__name__}")
    return data


def _coerce(value, tp, where: str):
    """`value` (from a file or a flag) as type `tp`, or a ValueError naming `where`."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"config: {where} must not be null (expected {getattr(tp, '__name__', tp)})")
    origin = typing.get_origin(tp)
    if _is_config(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"config: {where} must be a table/object of {tp.__name__} fields, got {value!r}")
        return config_from_dict(tp, value, _where=where + ".")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"config: {where} must be one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config: {where} must be a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ValueError(f"config: {where} must have {len(items)} items, got {value!r}")
        return tuple(_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config: {where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config: {where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config: {where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"config: {where} must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"config: {where} must be a path string, got {value!r}")
        return Path(value)
    raise TypeError(f"config: field type {tp!r} of {where} is not supported")


def config_from_dict(cls, data: dict, *, _where: str = ""):
    """An instance of dataclass `cls` from a nested dict; missing keys keep their defaults."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config: unknown key(s) {', '.join(_where + k for k in unknown)} for {cls.__name__} "
                         f"(known: {', '.join(sorted(names))})")
    values = {}
    for name, value in data.items():
        tp, _ = _unwrap_optional(hints[name])
        if _is_config(tp) and isinstance(value, dict):
            field = next(f for f in dataclasses.fields(cls) if f.name == name)
            base = field.default_factory() if field.default_factory is not dataclasses.MISSING else tp()
            value = _merge(config_to_dict(base), value)
        values[name] = _coerce(value, hints[name], _where + name)
    return cls(**values)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config_from_args(cls, args: argparse.Namespace):
    """The config of `cls`: `args.config` (file) first, then every flag given on the command line."""
    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    for dest, value in vars(args).items():
        if dest == "config" or dest.startswith("_"):
            continue
        node = data
        *parents, leaf = dest.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, list) else value
    return config_from_dict(cls, data)


def parse_config(cls, argv: list[str] | None = None, *, prog: str | None = None):
    """Parse `argv` into an instance of dataclass `cls` (flags as in `add_dataclass_arguments`)."""
    parser = argparse.ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(cfg) -> dict:
    """The config as a nested dict of JSON types (tuples as lists, paths as strings)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"config_to_dict: expected a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def save_config(cfg, path) -> Path:
    """Write the config as JSON to `path` (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def format_config(cfg) -> str:
    """One `section.field = value` line per leaf field."""
    lines = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, prefix + key + ".")
            else:
                lines.append(f"{prefix}{key} = {value!r}")

    walk(config_to_dict(cfg), "")
    return "\n".join(lines)


def print_config(cfg) -> None:
    """Print the resolved config, one field per line, under its class name."""
    print(f"{type(cfg).__name__}:\n" + "\n".join("  " + line for line in format_config(cfg).splitlines()),
          flush=True)
