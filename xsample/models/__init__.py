"""Backbones (timm), the projector, the two-view contrastive model and the CLIP baseline."""

from xsample.models.backbones import CUSTOM_BACKBONES, build_backbone, is_norm_or_bias, load_backbone
from xsample.models.clip import MAX_LOGIT_SCALE, CLIPModel
from xsample.models.heads import ContrastiveModel, ProjectionHead

__all__ = ["CUSTOM_BACKBONES", "MAX_LOGIT_SCALE", "CLIPModel", "ContrastiveModel", "ProjectionHead", "build_backbone",
           "is_norm_or_bias", "load_backbone"]
