"""Labels of a dataset and seeded class-balanced subsets (data-scarcity sweeps, few-label probes)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from torch.utils.data import Dataset, Subset


def root_dataset(dataset: Dataset) -> Dataset:
    """The dataset under any number of ``Subset`` wrappers (class-balanced fractions, probe splits)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Labels of every item, read from a ``labels`` attribute when the dataset has one (no decoding)."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [dataset[i]["label"] for i in range(len(dataset))]
    return np.asarray(labels)


def class_balanced_positions(labels: np.ndarray, fraction: float, seed: int) -> list[int]:
    """Sorted positions of the same ``fraction`` (in (0, 1]: a run's data.fraction or a few_label fraction,
    checked where the config or the evaluation spec is parsed) of every class (at least one item each), chosen
    with ``seed``."""
    labels = np.asarray(labels)
    if (labels < 0).all():
        raise ValueError("a class-balanced choice needs labels; every item is unlabelled (-1)")
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_class[int(label)].append(position)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(by_class):
        members = np.asarray(by_class[label])
        keep = max(1, int(round(fraction * len(members))))
        chosen.extend(rng.choice(members, size=keep, replace=False).tolist())
    return sorted(chosen)


def class_balanced_subset(dataset: Dataset, fraction: float, seed: int) -> Subset:
    """The same fraction of every class (at least one sample each), chosen with ``seed``."""
    return Subset(dataset, class_balanced_positions(dataset_labels(dataset), fraction, seed))
