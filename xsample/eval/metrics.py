"""Scoring rules of the evaluation protocols. Every accuracy is a percentage in [0, 100]."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

IMAGENET9_GAP_VARIANTS = ("mixed_same", "mixed_rand")


def top1_accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Percent of items whose prediction equals the label; items labelled -1 (unlabelled) are left out."""
    predictions, labels = predictions.cpu().long(), labels.cpu().long()
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")
    keep = labels >= 0
    if not bool(keep.any()):
        raise ValueError("no labelled items to score (all labels are -1)")
    return float((predictions[keep] == labels[keep]).float().mean() * 100.0)


def real_top1_accuracy(predictions: torch.Tensor, label_lists: Sequence[Sequence[int]]) -> float:
    """ImageNet-ReaL rule: correct when the top-1 prediction is one of the item's valid labels.

    Items with an empty list (no valid label after reassessment) are left out, as in the ReaL protocol.
    """
    predictions = predictions.cpu().long().tolist()
    if len(predictions) != len(label_lists):
        raise ValueError(f"{len(predictions)} predictions for {len(label_lists)} label lists")
    scored = [(prediction, set(valid)) for prediction, valid in zip(predictions, label_lists, strict=True) if len(valid)]
    if not scored:
        raise ValueError("every ReaL label list is empty: nothing to score")
    return 100.0 * sum(prediction in valid for prediction, valid in scored) / len(scored)


def mapped_predictions(logits: torch.Tensor, class_map: torch.Tensor, *, restrict: bool = True) -> torch.Tensor:
    """Top-1 predictions of a probe over ``C`` classes, mapped into a smaller label space.

    ``class_map[c]`` is the target class of probe class ``c`` or -1 when ``c`` has none (several probe
    classes may share a target: ImageNet -> ImageNet-9 super-classes, ImageNet -> ObjectNet overlap).
    ``restrict=True`` takes the argmax over mapped classes only; ``restrict=False`` takes the argmax over all
    classes and an unmapped winner (mapped to -1) counts as wrong.
    """
    class_map = class_map.to(logits.device).long()
    if class_map.ndim != 1 or len(class_map) != logits.shape[1]:
        raise ValueError(f"class_map must list one target (or -1) per probe class: {logits.shape[1]} entries, "
                         f"got {len(class_map) if class_map.ndim == 1 else tuple(class_map.shape)}")
    if not bool((class_map >= 0).any()):
        raise ValueError("class_map maps no probe class to a target class")
    if restrict:
        logits = logits.masked_fill(class_map < 0, float("-inf"))
    return class_map[logits.argmax(dim=1)].cpu()


def imagenet9_metrics(variant_accuracies: Mapping[str, float]) -> dict[str, float]:
    """Per-variant accuracies plus ``bg_gap = mixed_same - mixed_rand`` (the background-reliance gap)."""
    missing = [name for name in IMAGENET9_GAP_VARIANTS if name not in variant_accuracies]
    if missing:
        raise ValueError(f"bg_gap needs the ImageNet-9 variants {list(IMAGENET9_GAP_VARIANTS)}; missing {missing}")
    metrics = {name: float(value) for name, value in variant_accuracies.items()}
    metrics["bg_gap"] = metrics["mixed_same"] - metrics["mixed_rand"]
    return metrics


def zero_shot_top1(image_features: torch.Tensor, class_text_features: torch.Tensor, labels: torch.Tensor) -> float:
    """Zero-shot top-1: each image takes the class whose text embedding has the highest cosine similarity."""
    if image_features.ndim != 2 or class_text_features.ndim != 2 or image_features.shape[1] != class_text_features.shape[1]:
        raise ValueError(f"expected image features [N, E] and class text features [C, E], got "
                         f"{tuple(image_features.shape)} and {tuple(class_text_features.shape)}")
    similarity = F.normalize(image_features.float(), dim=1) @ F.normalize(class_text_features.float(), dim=1).T
    return top1_accuracy(similarity.argmax(dim=1), labels)
