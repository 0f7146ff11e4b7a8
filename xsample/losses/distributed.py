"""Gathering across processes for the module losses (open_clip's ``local_loss`` + ``gather_with_grad`` layout).

Each rank computes the loss of its LOCAL rows against the GLOBAL columns. The gather keeps the
graph: in backward, the gradients that all ranks send to one rank's slice are summed back to that
rank. With every rank's loss being the mean over its own rows, DDP's averaging of parameter
gradients then equals the gradient of the single-process loss on the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_autograd
from torch import Tensor


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, differentiable (gradients summed to the owner)."""
    if rank_and_world_size()[1] == 1:
        return tensor
    return torch.cat(dist_autograd.all_gather(tensor), dim=0)


def gather_without_grad(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, as a constant (labels, side information)."""
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return tensor.detach()
    tensor = tensor.detach().contiguous()
    pieces = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(pieces, tensor)
    return torch.cat(pieces, dim=0)


_agreed_local_size: int | None = None  # set by ``equal_local_batches``


@contextmanager
def equal_local_batches(local_size: int, device: torch.device, check_over_ranks: bool = True) -> Iterator[None]:
    """Within the block every rank's local batch holds ``local_size`` samples, checked once here over the
    ranks (a training loop with drop_last keeps it so); the losses then compare their batch with it on the
    host, with no collective and no device sync per step."""
    global _agreed_local_size
    if check_over_ranks:
        check_equal_local_batches(local_size, device)
    previous, _agreed_local_size = _agreed_local_size, local_size
    try:
        yield
    finally:
        _agreed_local_size = previous


def check_equal_local_batches(local_size: int, device: torch.device) -> None:
    """ValueError unless every rank holds ``local_size`` samples (the gathered layout assumes it)."""
    if _agreed_local_size is not None:
        if local_size != _agreed_local_size:
            raise ValueError(f"this rank's batch holds {local_size} samples, but the ranks agreed on "
                             f"{_agreed_local_size} each; keep drop_last=True and one batch size for all ranks")
        return
    sizes = gather_without_grad(torch.tensor([local_size], device=device)).tolist()
    if len(set(sizes)) > 1:
        raise ValueError(
            f"distributed contrastive losses need the same local batch size on every rank, got {sizes}; "
            "use drop_last=True in the DataLoader/sampler"
        )
