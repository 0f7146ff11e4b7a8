"""The raw-pixel "encoder" of the raw_pixels baseline: what a linear probe gets from the images alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelFeatures(nn.Module):
    """``features`` = the (already normalised) image flattened; sides above ``max_side`` are average-pooled
    down to it first, so a 224 px image gives a 3 x 32 x 32 "tiny image" vector rather than 150k dimensions."""

    def __init__(self, max_side: int):
        super().__init__()
        if int(max_side) < 1:
            raise ValueError(f"raw_pixels max_side must be a positive integer, got {max_side}")
        self.max_side = int(max_side)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if max(images.shape[-2:]) > self.max_side:
            images = F.adaptive_avg_pool2d(images, self.max_side)
        return images.flatten(1)
