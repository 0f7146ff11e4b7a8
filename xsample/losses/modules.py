"""Loss modules for training; they work unchanged in one process and under torch.distributed.

When the default process group has world_size > 1, each rank passes only its local batch: rows
stay local, columns (and labels / text embeddings for the targets) are gathered from all ranks,
and the returned value is the mean over the local rows. The mean of that over ranks is the loss
of the concatenated global batch, and after DDP averages gradients they equal the single-process
gradient of that loss (open_clip's ``local_loss=True, gather_with_grad=True``). Every rank must
hold the same number of samples (use ``drop_last=True``).
"""

from __future__ import annotations

from torch import Tensor, nn

from xsample.losses.core import check_temperature
from xsample.losses.functional import (
    clip_loss_over_ranks,
    simclr_loss_over_ranks,
    supcon_loss_over_ranks,
    xclr_loss_over_ranks,
)


class SimCLRLoss(nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return simclr_loss_over_ranks(z1, z2, temperature=self.temperature, gather=True)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class SupConLoss(nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss_over_ranks(z1, z2, labels, temperature=self.temperature, gather=True)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class XCLRLoss(nn.Module):
    """X-CLR with the graph = cosine similarity of per-sample text embeddings (no gradient)."""

    def __init__(self, temperature: float, graph_temperature: float, mask_self: bool = True) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)
        self.graph_temperature = check_temperature("graph_temperature", graph_temperature)
        self.mask_self = bool(mask_self)

    def forward(self, z1: Tensor, z2: Tensor, text_embeddings: Tensor) -> Tensor:
        return xclr_loss_over_ranks(z1, z2, text_embeddings, temperature=self.temperature,
                                    graph_temperature=self.graph_temperature, mask_self=self.mask_self, gather=True)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, graph_temperature={self.graph_temperature}, mask_self={self.mask_self}"


class ClipLoss(nn.Module):
    """Symmetric image-text InfoNCE; ``logit_scale`` is the exponentiated learnable scale."""

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: float | Tensor) -> Tensor:
        return clip_loss_over_ranks(image_features, text_features, logit_scale=logit_scale, gather=True)
