"""The no-training baselines (method untrained / raw_pixels): their "training" is only what makes the
probes fair, so every method's gain is measured against the same evaluation code.

An untrained network's BatchNorm layers hold their initial running statistics (mean 0, variance 1), which
do not match its activations: its features would be badly scaled for reasons unrelated to the weights.
``recompute_batchnorm_statistics`` replaces them with the cumulative average over training images, as a
few forward passes in train mode without gradients would after training (precise-BN style).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from xsample.config import RunConfig
from xsample.methods import method as registered_method
from xsample.train.components import TrainingSetup
from xsample.train.loop import TrainOutcome
from xsample.views.pil import eval_transform


def _training_images(dataset: Dataset, images: int, seed: int) -> Iterable:
    """``images`` training images: a seeded random choice from an indexable dataset, the first ones a shard
    stream (CC3M/CC12M, already shuffled) yields."""
    if isinstance(dataset, IterableDataset):
        return (item["image"] for item in itertools.islice(dataset, images))
    positions = np.random.default_rng(seed).permutation(len(dataset))[:images]
    return (dataset[int(position)]["image"] for position in positions)


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
    pictures = iter(_training_images(dataset, images, seed))
    used = 0
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            while chunk := list(itertools.islice(pictures, batch_size)):
                model.features(torch.stack([transform(image) for image in chunk]).to(device))
                used += len(chunk)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return used


def baseline_outcome(config: RunConfig, setup: TrainingSetup, device: torch.device) -> TrainOutcome:
    """The baseline's model, ready for the probes, as a zero-step training outcome."""
    method = config.method
    model = setup.model.to(device)
    started = time.perf_counter()
    used = 0
    if registered_method(method.name).batchnorm_pass:
        used = recompute_batchnorm_statistics(
            model, setup.train_dataset, eval_transform(config.data.image_size),
            images=method.batchnorm_images, batch_size=method.batchnorm_batch_size, device=device,
            seed=config.seed)
    return TrainOutcome(model=model, resumed_from=None, steps=0, samples_seen=used,
                        train_seconds=time.perf_counter() - started, data_wait_seconds=0.0)
