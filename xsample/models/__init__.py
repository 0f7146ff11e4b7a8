"""Backbones (timm), the projector, the two-view contrastive model, the CLIP baseline and exported probes.

Names are imported on first use (PEP 562), so that reading a probe's metadata (the planner does, to adopt a
finished run) does not import timm and open_clip: several seconds of every launch and every worker."""

import importlib

_MODULE_OF = {"CUSTOM_BACKBONES": "backbones", "build_backbone": "backbones", "is_norm_or_bias": "backbones",
              "load_backbone": "backbones", "ProbeClassifier": "classifier", "load_probe": "classifier",
              "MAX_LOGIT_SCALE": "clip", "CLIPModel": "clip", "ContrastiveModel": "heads", "ProjectionHead": "heads",
              "PixelFeatures": "pixels"}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"xsample.models.{_MODULE_OF[name]}"), name)
