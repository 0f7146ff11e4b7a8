"""Labels of a dataset and seeded class-balanced subsets (data-scarcity sweeps)."""

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


def class_balanced_subset(dataset: Dataset, fraction: float, seed: int) -> Subset:
    """The same ``fraction`` (in (0, 1]: a run's data.fraction, checked where its config is parsed) of every
    class (at least one sample each), chosen with ``seed``."""
    labels = dataset_labels(dataset)
    if (labels < 0).all():
        raise ValueError("class_balanced_subset needs a labelled dataset; this one has no labels")
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_class[int(label)].append(position)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(by_class):
        members = np.asarray(by_class[label])
        keep = max(1, int(round(fraction * len(members))))
        chosen.extend(rng.choice(members, size=keep, replace=False).tolist())
    return Subset(dataset, sorted(chosen))
