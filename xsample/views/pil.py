"""The per-image path: each view drawn with the PIL recipe in a DataLoader worker (``PILViews``), and the
evaluation transform; xsample/views/batched.py draws the same laws for whole batches on the device."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch.utils.data import default_collate
from torchvision import transforms as T

from xsample.data.items import item_fields
from xsample.views.recipe import (
    CROP_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentRecipe,
    _blur_kernel,
    default_min_crop_scale,
    eval_resize,
)


class PILViews:
    """The reference path: each worker draws every view with the PIL recipe, seeded per sample."""

    name = "pil"
    collate = staticmethod(default_collate)

    def __init__(self, augmentation: Callable, num_views: int):
        self.augmentation = augmentation
        self.num_views = num_views

    def __call__(self, item: dict, sample_seed: int) -> dict:
        """The training item: ``num_views`` augmentations drawn from ``sample_seed``, plus index, label, caption."""
        torch.manual_seed(sample_seed)
        random.seed(sample_seed)
        return {**{f"view{k + 1}": self.augmentation(item["image"]) for k in range(self.num_views)}, **item_fields(item)}

    def on_device(self, batch: dict, device: torch.device) -> dict:
        return batch

    def describe(self) -> dict:
        """What result.json records about the input path."""
        return {"augment": self.name}


def training_augmentation(recipe: AugmentRecipe, image_size: int, min_crop_scale: float | None = None) -> T.Compose:
    """The PIL version of ``recipe``: random resized crop, flip, then colour jitter, grayscale and blur
    (SimCLR, Chen et al. 2020) or AutoAugment (Cubuk et al. 2019); to a normalised tensor."""
    if min_crop_scale is None:
        min_crop_scale = default_min_crop_scale(image_size)
    steps = [T.RandomResizedCrop(image_size, scale=(min_crop_scale, 1.0), ratio=CROP_RATIO, antialias=True),
             T.RandomHorizontalFlip()]
    if (jitter := recipe.colour_jitter) is not None:
        steps.append(T.RandomApply([T.ColorJitter(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)],
                                   p=jitter.probability))
    if recipe.grayscale_probability:
        steps.append(T.RandomGrayscale(p=recipe.grayscale_probability))
    if (blur := recipe.blur) is not None:
        steps.append(T.RandomApply([T.GaussianBlur(_blur_kernel(image_size), sigma=blur.sigma)], p=blur.probability))
    if recipe.autoaugment is not None:
        steps.append(T.AutoAugment(T.AutoAugmentPolicy(recipe.autoaugment)))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(image_size: int) -> T.Compose:
    """Resize the short side to ``eval_resize`` and centre-crop, as the probes expect."""
    return T.Compose([
        T.Resize(eval_resize(image_size), antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
