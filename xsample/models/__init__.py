"""Backbones (timm), the projector, the two-view contrastive model, the CLIP baseline and exported probes."""

from xsample.models.backbones import CUSTOM_BACKBONES, build_backbone, is_norm_or_bias, load_backbone
from xsample.models.classifier import ProbeClassifier, load_probe
from xsample.models.clip import MAX_LOGIT_SCALE, CLIPModel
from xsample.models.heads import ContrastiveModel, ProjectionHead
from xsample.models.pixels import PixelFeatures

__all__ = ["CUSTOM_BACKBONES", "MAX_LOGIT_SCALE", "CLIPModel", "ContrastiveModel", "PixelFeatures", "ProbeClassifier",
           "ProjectionHead", "build_backbone", "is_norm_or_bias", "load_backbone", "load_probe"]
