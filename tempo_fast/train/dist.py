"""One code path for one device and for `torchrun`: process group, device, model wrapping.

`init_distributed(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT). Without WORLD_SIZE (or with 1) it is a single process and starts no process
group. Otherwise it starts one: NCCL on CUDA (device `cuda:LOCAL_RANK`), gloo on CPU.

Model wrapping for data parallel training (`wrap_model`): FSDP2
(`torch.distributed.fsdp.fully_shard`) on every decoder / vision block (the model's
`_no_split_modules`) and then the root (`apply_fsdp`), on CUDA (NCCL) and on CPU (gloo, which
the tests use) alike: parameters, gradients and optimizer states are sharded and the training
forward is the model itself. One process: the model unchanged. FSDP2 reduces gradients as a mean
over ranks, so a loss normalised by the global token count is multiplied by world_size before
backward. The root's parameters (embeddings, final norm, LM head) stay unsharded between its
forward and backward, which lets the loss use the LM head's weight directly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistInfo:
    """Where this process stands in the job."""

    rank: int              # global rank (0 in a single process)
    world_size: int        # number of processes
    local_rank: int        # rank on this machine (selects the CUDA device)
    device: torch.device   # this process's device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda:LOCAL_RANK when CUDA is available, else cpu; "cuda" -> cuda:LOCAL_RANK."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """This process's `DistInfo`; starts the process group under torchrun (idempotent)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    import torch.distributed as dist

    return not _initialized() or dist.get_rank() == 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if _initialized() else 1


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    import torch.distributed as dist

    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over ranks (a new tensor; the input itself in a single process)."""
    import torch.distributed as dist

    if not _initialized() or dist.get_world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over ranks."""
    return all_reduce_sum(tensor) / world_size()


def apply_fsdp(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 `fully_shard` on each block named in `model._no_split_modules`, then on the root.

    A no-op in a single process. Returns the model (sharded in place).
    """
    if world_size() == 1:
        return model
    from torch.distributed.fsdp import fully_shard

    block_names = set(getattr(model, "_no_split_modules", None) or ())
    if not block_names:
        raise ValueError(f"apply_fsdp: {type(model).__name__} names no blocks in _no_split_modules")
    for module in model.modules():
        if type(module).__name__ in block_names:
            fully_shard(module)
    fully_shard(model)
    return model


def wrap_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """The module to run the training forward through: `model` sharded with FSDP2 (in place)
    under torchrun, `model` itself in a single process."""
    if info.world_size == 1:
        return model
    return apply_fsdp(model)


def cleanup() -> None:
    """Destroy the process group if this process started one."""
    import torch.distributed as dist

    if _initialized():
        dist.destroy_process_group()
