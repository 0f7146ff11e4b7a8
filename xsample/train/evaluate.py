"""Evaluation of a trained model: frozen-backbone probes for every method, zero-shot for CLIP; the run keeps
its ImageNet (analog) probe (``probe.safetensors``) for the export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xsample.config import RunConfig
from xsample.data import build_dataset
from xsample.eval import ScoredProbe, extract_features, run_evaluations, zero_shot_top1
from xsample.eval.zero_shot import zero_shot_classifier
from xsample.io import atomic_write_bytes
from xsample.models.classifier import PROBE_WEIGHTS, probe_file
from xsample.train.loop import autocast
from xsample.views.pil import eval_transform
from xsample.views.recipe import IMAGENET_MEAN, IMAGENET_STD

# The evaluation whose probe a run keeps: its top-1 is the headline number the export reproduces.
KEPT_PROBE = "imagenet"


class _Call(nn.Module):
    """Exposes one method of a model (features, encode_image) as the encoder's forward."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(images)


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # the result.json contract
    details: dict[str, Any]  # chosen probe lr, held-out accuracies, sizes
    probe: ScoredProbe | None  # the KEPT_PROBE evaluation's probe, when the run has that evaluation


def zero_shot_accuracies(model: nn.Module, config: RunConfig, device: torch.device,
                         template_sets: Sequence[str]) -> dict[str, float]:
    """Top-1 on the ImageNet (analog) test set per template set (xsample.eval.zero_shot): classes prompted
    through the model's own text tower, the test images encoded once."""
    spec = next(e for e in config.eval.evaluations if e.name == "imagenet").settings["test"]
    root = spec.get("root") or config.paths.data_roots().get(spec["name"])
    dataset = build_dataset(spec["name"], spec["split"], root=root, **(spec.get("options") or {}))
    model.eval()
    image_features, fields = extract_features(
        _Call(model, "encode_image"), dataset, eval_transform(config.data.image_size),
        batch_size=256, device=device, num_workers=config.runtime.num_workers,
    )
    return {templates: zero_shot_top1(image_features, zero_shot_classifier(model, dataset.class_names, templates,
                                                                           device).cpu(), fields["label"])
            for templates in template_sets}


def evaluate_model(model: nn.Module, config: RunConfig, device: torch.device) -> Evaluation:
    """Metrics in the result.json contract, details such as the chosen probe lr, and the kept probe.
    Features are extracted at training speed: the training precision, channels_last, batched decoding."""
    model = model.to(memory_format=torch.channels_last)
    scored_probes: dict[str, ScoredProbe] = {}
    metrics, details = run_evaluations(
        _Call(model, "features"), config.eval.evaluation_specs(), device=device,
        probe_config=asdict(config.eval.probe), image_size=config.data.image_size,
        data_roots=config.paths.data_roots(), seed=config.seed, num_workers=config.runtime.num_workers,
        scored_probes=scored_probes, autocast=lambda: autocast(device, config.runtime.precision),
    )
    zero_shot = config.eval.zero_shot
    if zero_shot:  # false for runs without a text tower or an ImageNet (analog) test set
        templates = zero_shot.templates
        metrics["zero_shot"] = {"imagenet": zero_shot_accuracies(model, config, device, [templates])[templates]}
    return Evaluation(metrics, details, scored_probes.get(KEPT_PROBE))


def save_run_probe(run_dir: Path, evaluation: Evaluation, config_hash: str, step: int) -> Path | None:
    """Write the kept probe to ``run_dir/probe.safetensors`` (atomically); None when the run has none."""
    scored = evaluation.probe
    if scored is None:
        return None
    probe = scored.probe
    class_names = scored.class_names or [str(index) for index in range(probe.num_classes)]
    about = {"evaluation": KEPT_PROBE, "config_hash": config_hash, "step": step,
             "trained_on": scored.train.describe(), "learning_rate": probe.learning_rate,
             "top1": evaluation.metrics[KEPT_PROBE]["top1"],
             "image_normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}
    path = Path(run_dir) / PROBE_WEIGHTS
    atomic_write_bytes(path, probe_file(probe.weight.T, probe.bias, probe.mean, probe.std, class_names, about))
    return path
