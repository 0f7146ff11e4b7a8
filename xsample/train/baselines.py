"""The no-training baselines (method untrained / raw_pixels): their "training" is only what makes the
probes fair, so every method's gain is measured against the same evaluation code.

An untrained network's BatchNorm layers hold their initial running statistics (mean 0, variance 1), which
do not match its activations: its features would be badly scaled for reasons unrelated to the weights.
``recompute_batchnorm_statistics`` replaces them with the cumulative average over training images, as a
few forward passes in train mode without gradients would after training (precise-BN style).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from xsample.data import eval_transform
from xsample.train.components import TrainingSetup
from xsample.train.loop import TrainOutcome


def recompute_batchnorm_statistics(model: nn.Module, dataset: Dataset, transform, *, images: int, batch_size: int,
                                   device: torch.device, seed: int) -> int:
    """Reset every BatchNorm's running statistics to the average over ``images`` seeded training images
    (fewer if the set is smaller) passed through ``model.features``. Returns the number of images used."""
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    if images < 1 or batch_size < 1:
        raise ValueError(f"batchnorm_images and batchnorm_batch_size must be >= 1, got {images} and {batch_size}")
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts equally
    positions = np.random.default_rng(seed).permutation(len(dataset))[:images]
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(positions), batch_size):
                batch = torch.stack([transform(dataset[int(p)]["image"]) for p in positions[start:start + batch_size]])
                model.features(batch.to(device))
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return len(positions)


def baseline_outcome(config: dict[str, Any], setup: TrainingSetup, device: torch.device) -> TrainOutcome:
    """The baseline's model, ready for the probes, as a zero-step training outcome."""
    method = config["method"]
    model = setup.model.to(device)
    started = time.perf_counter()
    used = 0
    if method["name"] == "untrained":
        used = recompute_batchnorm_statistics(
            model, setup.train_dataset, eval_transform(int(config["data"]["image_size"])),
            images=int(method["batchnorm_images"]), batch_size=int(method["batchnorm_batch_size"]), device=device,
            seed=int(config["seed"]))
    return TrainOutcome(model=model, resumed_from=None, steps=0, samples_seen=used,
                        train_seconds=time.perf_counter() - started, data_wait_seconds=0.0)
