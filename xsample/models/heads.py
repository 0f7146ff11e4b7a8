"""Projector MLP and the backbone + projector model trained by SimCLR, SupCon and X-CLR."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Sequential):
    """SimCLR-style MLP: ``num_layers`` linear layers, each but the last followed by BatchNorm (optional)
    and ReLU. Outputs are not normalised; the losses normalise them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True):
        for label, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim),
                             ("num_layers", num_layers)):
            if int(value) < 1:
                raise ValueError(f"projector {label} must be a positive integer, got {value}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            # A bias right before BatchNorm would be cancelled by its mean subtraction.
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim


class ContrastiveModel(nn.Module):
    """``forward`` gives projections for the contrastive loss, ``features`` the backbone features for probes."""

    def __init__(self, backbone: nn.Module, feature_dim: int, projector: nn.Module):
        super().__init__()
        in_dim = getattr(projector, "in_dim", feature_dim)
        if in_dim != feature_dim:
            raise ValueError(f"the projector expects {in_dim} inputs but the backbone gives {feature_dim} features; "
                             f"build the ProjectionHead with in_dim={feature_dim}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.projector = projector

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(images))
