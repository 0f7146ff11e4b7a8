"""A run's linear probe as a module: ``probe(backbone(images))`` gives the class logits the run scored with.

A run writes the probe of its ImageNet (analog) evaluation to ``probe.safetensors`` in its run directory when
it evaluates; ``python -m xsample.export`` copies it beside the backbone, and ``load_probe(DIR)`` loads it. The
file holds ``weight`` [C, D] and ``bias`` [C] (``torch.nn.Linear``'s layout) and the feature standardisation the
probe was trained with, ``feature_mean`` and ``feature_std`` [D]; its metadata holds the class names, the image
normalisation the features were computed with, and where the probe came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

PROBE_WEIGHTS = "probe.safetensors"


class ProbeClassifier(nn.Module):
    """Logits ``((features - feature_mean) / feature_std) @ weight.T + bias``; ``class_names[c]`` names logit c."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, feature_mean: torch.Tensor,
                 feature_std: torch.Tensor, class_names: Sequence[str]):
        super().__init__()
        if len(class_names) != weight.shape[0]:
            raise ValueError(f"{len(class_names)} class names for a probe over {weight.shape[0]} classes")
        self.register_buffer("weight", weight.float())
        self.register_buffer("bias", bias.float())
        self.register_buffer("feature_mean", feature_mean.float())
        self.register_buffer("feature_std", feature_std.float())
        self.class_names = list(class_names)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear((features.float() - self.feature_mean) / self.feature_std, self.weight, self.bias)


def probe_file(weight: torch.Tensor, bias: torch.Tensor, feature_mean: torch.Tensor, feature_std: torch.Tensor,
               class_names: Sequence[str], about: dict[str, Any]) -> bytes:
    """The bytes of a probe file; ``about`` (JSON) says where it came from (config hash, step, metrics)."""
    tensors = {"weight": weight, "bias": bias, "feature_mean": feature_mean, "feature_std": feature_std}
    return save({name: tensor.detach().float().cpu().contiguous() for name, tensor in tensors.items()},
                metadata={"class_names": json.dumps(list(class_names)), "about": json.dumps(about)})


def probe_metadata(path: str | Path) -> dict[str, Any]:
    """The class names and the ``about`` block of a probe file."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return {"class_names": json.loads(metadata["class_names"]), "about": json.loads(metadata["about"])}


def load_probe(export_dir: str | Path) -> ProbeClassifier:
    """The probe of an export (or run) directory, in eval mode: ``load_probe(DIR)(load_backbone(DIR)(images))``."""
    path = Path(export_dir) / PROBE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{export_dir} holds no {PROBE_WEIGHTS}; an export has one when its run was "
                                "evaluated with a linear probe (python -m xsample.export RUN_DIR --out DIR)")
    tensors = load_file(path)
    return ProbeClassifier(tensors["weight"], tensors["bias"], tensors["feature_mean"], tensors["feature_std"],
                           probe_metadata(path)["class_names"]).eval()
