"""Contrastive losses: one core (logits, targets, cross-entropy) with SimCLR, SupCon, X-CLR and CLIP targets.

Functions (single process): ``simclr_loss``, ``supcon_loss``, ``xclr_loss``, ``clip_loss``.
Modules (training; torch.distributed-aware): ``SimCLRLoss``, ``SupConLoss``, ``XCLRLoss``, ``ClipLoss``.
"""

from xsample.losses.core import BlockTargets, TwoViewLayout, contrastive_cross_entropy, similarity_logits
from xsample.losses.distributed import gather_with_grad, gather_without_grad
from xsample.losses.functional import clip_loss, simclr_loss, supcon_loss, xclr_loss
from xsample.losses.modules import ClipLoss, SimCLRLoss, SupConLoss, XCLRLoss

__all__ = [
    "BlockTargets",
    "ClipLoss",
    "SimCLRLoss",
    "SupConLoss",
    "TwoViewLayout",
    "XCLRLoss",
    "clip_loss",
    "contrastive_cross_entropy",
    "gather_with_grad",
    "gather_without_grad",
    "simclr_loss",
    "similarity_logits",
    "supcon_loss",
    "xclr_loss",
]
