"""Evaluation of a trained model: frozen-backbone probes for every method, zero-shot for CLIP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xsample.data import build_dataset, eval_transform
from xsample.eval import extract_features, run_evaluations, zero_shot_top1
from xsample.train.loop import autocast

ZERO_SHOT_TEMPLATE = "a photo of a {}"


class _Call(nn.Module):
    """Exposes one method of a model (features, encode_image) as the encoder's forward."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(images)


def _data_roots(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (config.get("paths") or {}).items() if k != "cache"}


def zero_shot_accuracy(model: nn.Module, config: dict[str, Any], device: torch.device) -> float:
    """Top-1 on the ImageNet (analog) test set, classes prompted through the model's own text tower."""
    spec = next(e for e in config["eval"]["evaluations"] if e["name"] == "imagenet")["test"]
    root = spec.get("root") or _data_roots(config).get(spec["name"])
    dataset = build_dataset(spec["name"], spec["split"], root=root, **(spec.get("options") or {}))
    model.eval()
    with torch.no_grad():
        tokens = model.tokenize([ZERO_SHOT_TEMPLATE.format(name) for name in dataset.class_names]).to(device)
        class_features = model.encode_text(tokens)
    image_features, fields = extract_features(
        _Call(model, "encode_image"), dataset, eval_transform(int(config["data"]["image_size"])),
        batch_size=256, device=device, num_workers=int(config["runtime"].get("num_workers", 0)),
    )
    return zero_shot_top1(image_features, class_features.cpu(), fields["label"])


def evaluate_model(model: nn.Module, config: dict[str, Any], device: torch.device) -> tuple[dict, dict]:
    """(metrics, details): metrics in the result.json contract, details such as the chosen probe lr.
    Features are extracted at training speed: the training precision, channels_last, batched decoding."""
    eval_cfg = config["eval"]
    model = model.to(memory_format=torch.channels_last)
    metrics, details = run_evaluations(
        _Call(model, "features"), eval_cfg["evaluations"], device=device, probe_config=eval_cfg["probe"],
        image_size=int(config["data"]["image_size"]), data_roots=_data_roots(config), seed=int(config["seed"]),
        num_workers=int(config["runtime"]["num_workers"]),
        autocast=lambda: autocast(device, config["runtime"]["precision"]),
    )
    if eval_cfg.get("zero_shot"):
        metrics["zero_shot"] = {"imagenet": zero_shot_accuracy(model, config, device)}
    return metrics, details
