"""Training checkpoints: written atomically, resumed exactly.

Layout of `folder/step_{step:06d}/`:
- the model as `save_pretrained` writes it (config.json, model.safetensors), its tokenizer and the
  source checkpoint's preprocessor/chat-template files, so `load_model(step_folder)` loads it
  like any checkpoint (e.g. for `tempo-fast ground --model`);
- `training_state.pt`: step, optimizer and scheduler states, the data position, `extra`, and the
  RNG states (python, numpy, torch CPU, every CUDA device) of every rank;
- `train_config.json`: the run's config (`tempo_fast.config.config_to_dict`).

Atomicity: everything is written into `folder/.tmp_step_*` and renamed into place with
`os.replace`, then `folder/latest` (the step folder's name) is replaced atomically too, so a run
killed at any moment leaves either the previous or the new checkpoint, never half of one. The
newest `keep` step folders are kept.

Distributed: `save_checkpoint` and `load_checkpoint` are collective (call them on every rank).
Full (unsharded) model and optimizer states are gathered with
`torch.distributed.checkpoint.state_dict` (works for plain modules, DDP and FSDP2) and only rank 0
writes; every rank gets its own RNG state back on load.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "training_state.pt"
CONFIG_FILE = "train_config.json"
LATEST = "latest"
# files copied from the source checkpoint beside the saved weights (when present)
_SIDE_FILES = ("preprocessor_config.json", "chat_template.jinja", "chat_template.json")


def _dist():
    """(rank, world_size) of the default process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def rng_state() -> dict:
    """This process's RNG states: python, numpy, torch CPU and every CUDA device."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model):
    """(the transformers model, its tokenizer or None, its source folder or None)."""
    inner = getattr(model, "model", model)
    inner = getattr(inner, "module", inner)  # DDP
    return inner, getattr(model, "tokenizer", None), getattr(model, "path", None)


def _model_state(module, world: int):
    if world == 1:
        return None  # save_pretrained reads the module itself
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _optimizer_state(module, optimizer, world: int):
    if world == 1:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _gather_rng(world: int) -> list:
    if world == 1:
        return [rng_state()]
    import torch.distributed as dist

    states = [None] * world
    dist.all_gather_object(states, rng_state())
    return states


def _step_name(step: int) -> str:
    return f"step_{int(step):06d}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _prune(folder: Path, keep: int) -> None:
    steps = sorted(p for p in folder.glob("step_*") if p.is_dir() and (p / STATE_FILE).is_file())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(folder, *, step: int, model, optimizer, scheduler, data_state: dict, config,
                    extra: dict | None = None, keep: int = 2) -> Path:
    """Write `folder/step_{step:06d}` atomically and point `folder/latest` at it (collective).

    model: a `VLModel` (its `.model` plain, DDP-wrapped or FSDP2-sharded) or a transformers model.
    config: a dataclass config (or a dict) saved as train_config.json. Returns the step folder.
    """
    from tempo_fast.config import config_to_dict

    folder = Path(folder)
    rank, world = _dist()
    module, tokenizer, source = _unwrap(model)
    model_state = _model_state(module, world)
    optim_state = _optimizer_state(module, optimizer, world)
    rngs = _gather_rng(world)
    final = folder / _step_name(step)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp_{_step_name(step)}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        module.save_pretrained(tmp, state_dict=model_state) if model_state is not None else module.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name in _SIDE_FILES:
            if source is not None and (Path(source) / name).is_file() and not (tmp / name).exists():
                shutil.copy2(Path(source) / name, tmp / name)
        torch.save({"step": int(step), "optimizer": optim_state,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "data_state": data_state, "extra": extra or {}, "rng": rngs, "world_size": world},
                   tmp / STATE_FILE)
        cfg = config if isinstance(config, dict) else config_to_dict(config)
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        if final.exists():  # a rerun of the same step (e.g. after a resume) replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_atomic(folder / LATEST, final.name + "\n")
        _prune(folder, keep)
    _barrier()
    return final


def latest_checkpoint(folder) -> Path | None:
    """The newest complete checkpoint under `folder` (by the `latest` pointer, else by step), or None."""
    folder = Path(folder)
    pointer = folder / LATEST
    if pointer.is_file():
        candidate = folder / pointer.read_text(encoding="utf-8").strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    steps = sorted(p for p in folder.glob("step_*") if p.is_dir() and (p / STATE_FILE).is_file())
    return steps[-1] if steps else None


def _load_weights(module, path: Path, world: int) -> None:
    loaded = type(module).from_pretrained(path, dtype=next(module.parameters()).dtype, local_files_only=True)
    full = loaded.state_dict()
    if world == 1:
        module.load_state_dict(full)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True))


def load_checkpoint(path, *, model, optimizer=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Restore model weights, optimizer, scheduler and this rank's RNG from a step folder (collective).

    Returns {"step", "data_state", "extra"}. A checkpoint written with another world size restores
    weights and optimizer (both are saved unsharded) and rank r gets RNG state r modulo the old size.
    """
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"load_checkpoint: {str(path)!r} is not a complete checkpoint (no {STATE_FILE})")
    rank, world = _dist()
    module, _, _ = _unwrap(model)
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    _load_weights(module, path, world)
    if optimizer is not None:
        if world == 1:
            optimizer.load_state_dict(state["optimizer"])
        else:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(module, optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        rngs = state["rng"]
        set_rng_state(rngs[rank % len(rngs)])
    return {"step": int(state["step"]), "data_state": state["data_state"], "extra": state.get("extra", {})}
