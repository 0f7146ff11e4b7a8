"""Gathering across processes for the module losses (open_clip's ``local_loss`` + ``gather_with_grad`` layout).

Each rank computes the loss of its LOCAL rows against the GLOBAL columns. The gather keeps the
graph: in backward, the gradients that all ranks send to one rank's slice are summed back to that
rank. With every rank's loss being the mean over its own rows, DDP's averaging of parameter
gradients then equals the gradient of the single-process loss on the concatenated batch.
"""

from __future__ import annotations

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


def check_equal_local_batches(local_size: int, device: torch.device) -> None:
    """ValueError unless every rank holds ``local_size`` samples (the gathered layout assumes it)."""
    sizes = gather_without_grad(torch.tensor([local_size], device=device)).tolist()
    if len(set(sizes)) > 1:
        raise ValueError(
            f"distributed contrastive losses need the same local batch size on every rank, got {sizes}; "
            "use drop_last=True in the DataLoader/sampler"
        )
