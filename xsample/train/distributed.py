"""Process-group set-up from torchrun or SLURM/submitit environments (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_slurm_host() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    try:
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True, text=True
        ).stdout.split()
        return hosts[0]
    except (OSError, subprocess.CalledProcessError):
        return nodelist.split(",")[0]


def _environment_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables, else SLURM's (one task per GPU)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def environment_rank() -> int:
    """This process's global rank as the launcher set it (0 when not distributed), before any group exists."""
    return _environment_ranks()[0]


def init_distributed(device: str = "auto") -> DistInfo:
    """Join (or create) the default process group described by the environment.

    A single process needs no group. Under SLURM the master address is the job's first node and the
    port is derived from the job id, so every task of one job agrees without extra configuration.
    """
    rank, world_size, local_rank = _environment_ranks()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", _first_slurm_host())
        os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def all_ranks_true(flag: bool, info: DistInfo) -> bool:
    """True only if ``flag`` holds on every rank (so all ranks stop together on a NaN)."""
    if info.world_size == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def mean_over_ranks(value: torch.Tensor, info: DistInfo) -> float:
    """The ranks' mean of a scalar: the global-batch loss when each rank holds its local rows' mean.
    A NaN or inf on any rank makes the result non-finite everywhere, so all ranks stop together."""
    value = value.detach().float().reshape(1)
    if info.world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return float(value.item())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
