"""tempo_fast.config: flags generated from nested dataclasses, config files, flag precedence."""
import argparse
import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from tempo_fast.config import (add_dataclass_arguments, config_from_dict, config_to_dict, load_config_file,
                               parse_config, save_config)
from tempo_fast.train.config import GRPOConfig, SFTConfig


@dataclass
class Inner:
    rate: float = 0.5                   # how fast it goes
    # the mode, commented above
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, int] = (1, 2)     # two sizes
    limit: int | None = None            # optional limit
    on: bool = True                     # a switch


@dataclass
class Outer:
    name: str = "x"                     # a name
    inner: Inner = field(default_factory=Inner)  # nested part
    other: Inner = field(default_factory=lambda: Inner(rate=2.0))  # nested with another default


def test_flags_types_and_nesting():
    cfg = parse_config(Outer, ["--inner-rate", "0.25", "--inner-mode", "b", "--inner-sizes", "3", "4",
                               "--inner-limit", "7", "--no-inner-on", "--name", "y"])
    assert cfg == Outer(name="y", inner=Inner(rate=0.25, mode="b", sizes=(3, 4), limit=7, on=False))
    assert isinstance(cfg.inner.sizes, tuple)
    assert parse_config(Outer, ["--inner-limit", "none"]).inner.limit is None
    assert parse_config(Outer, []) == Outer()
    assert parse_config(Outer, []).other.rate == 2.0  # the parent's default_factory wins


def test_bad_flag_values_exit():
    for argv in (["--inner-mode", "c"], ["--inner-rate", "fast"], ["--inner-sizes", "1"]):
        with pytest.raises(SystemExit):
            parse_config(Outer, argv)


def test_help_from_comments(capsys):
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Outer)
    text = parser.format_help()
    for phrase in ("how fast it goes", "the mode, commented above", "optional limit", "--no-inner-on", "a name"):
        assert phrase in text, phrase
    with pytest.raises(TypeError):
        add_dataclass_arguments(argparse.ArgumentParser(), int)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_file_then_flags(tmp_path, suffix):
    path = tmp_path / f"cfg{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"name": "file", "inner": {"rate": 1.5, "sizes": [5, 6]}}))
    else:
        path.write_text('name = "file"\n[inner]\nrate = 1.5\nsizes = [5, 6]\n')
    cfg = parse_config(Outer, ["--config", str(path), "--inner-rate", "3"])
    assert cfg.name == "file" and cfg.inner.rate == 3.0 and cfg.inner.sizes == (5, 6)
    assert cfg.inner.mode == "a" and cfg.other.rate == 2.0


def test_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"inner": {"speed": 1}}))
    with pytest.raises(ValueError, match="inner.speed"):
        load_and_build(bad)
    bad.write_text(json.dumps({"inner": {"rate": "quick"}}))
    with pytest.raises(ValueError, match="inner.rate"):
        load_and_build(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config_file(bad)
    with pytest.raises(FileNotFoundError):
        load_config_file(tmp_path / "missing.json")


def load_and_build(path):
    return config_from_dict(Outer, load_config_file(path))


def test_round_trip_training_configs(tmp_path):
    cfg = parse_config(GRPOConfig, ["--optim-lr", "0.01", "--run-steps", "7", "--no-model-freeze-vision",
                                    "--loss-type", "dapo", "--delta", "1.5", "--optim-betas", "0.8", "0.95"])
    assert cfg.run.out_dir == "runs/grpo" and cfg.run.steps == 7 and cfg.optim.lr == 0.01
    assert cfg.model.freeze_vision is False and cfg.loss_type == "dapo" and cfg.optim.betas == (0.8, 0.95)
    path = save_config(cfg, tmp_path / "c.json")
    assert parse_config(GRPOConfig, ["--config", str(path)]) == cfg
    assert config_from_dict(SFTConfig, config_to_dict(SFTConfig())) == SFTConfig()


def test_config_validation():
    with pytest.raises(ValueError, match="num_frames"):
        parse_config(SFTConfig, ["--data-num-frames", "3"])
    with pytest.raises(ValueError, match="lr"):
        parse_config(SFTConfig, ["--optim-lr", "0"])
