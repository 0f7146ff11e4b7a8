"""Known-answer sanity runs: the training set with its supervision detached from the images.

``shuffled_labels``: every training image gets the label of another random image (a seeded permutation of
the label column, so class sizes stay the same but labels no longer match images; renaming class ids would
not do that). SupCon's class graph and X-CLR's class-name graph both read this label.
``misaligned_graph``: every sample gets the side information of another random sample: its label (class
graphs), its index (rows of the caption-embedding cache) and its caption (CLIP's text).
A correct pipeline then loses its supervised advantage; a pipeline whose supervised runs are no better than
these is not using its supervision.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, IterableDataset, Subset

from xsample.data import dataset_labels

SANITY_CHECKS = ("none", "shuffled_labels", "misaligned_graph")
# Fixed across seeds: the sanity run of every seed sees the same corruption.
_PERMUTATION_SEED = 20240725


def check_sanity(sanity: str) -> None:
    if sanity not in SANITY_CHECKS:
        raise ValueError(f"unknown sanity={sanity!r}; choose one of {', '.join(SANITY_CHECKS)}")


class DetachedSupervision(Subset):
    """The dataset (same positions, same images) with labels or side information taken from a seeded
    random permutation of the samples. A ``Subset`` over every position, so code that
    unwraps subsets (class names, caption caches) reaches the original dataset."""

    def __init__(self, dataset: Dataset, sanity: str):
        check_sanity(sanity)
        if sanity == "none":
            raise ValueError("DetachedSupervision needs sanity=shuffled_labels or misaligned_graph")
        if isinstance(dataset, IterableDataset):
            raise ValueError(f"sanity={sanity} needs a map-style dataset (positions to permute); "
                             f"{type(dataset).__name__} is a stream")
        super().__init__(dataset, list(range(len(dataset))))
        self.sanity = sanity
        self.donors = np.random.default_rng(_PERMUTATION_SEED).permutation(len(dataset))
        self.donor_labels = dataset_labels(dataset)[self.donors]

    def __getitem__(self, position: int) -> dict:
        item = dict(self.dataset[position])
        item["label"] = int(self.donor_labels[position])
        if self.sanity == "misaligned_graph":
            donor = self.dataset[int(self.donors[position])]
            item["index"], item["caption"] = donor["index"], donor.get("caption") or ""
        return item

    def __getitems__(self, positions: list[int]) -> list[dict]:  # Subset's batched fetch would bypass __getitem__
        return [self[position] for position in positions]


def with_sanity(dataset: Dataset, sanity: str) -> Dataset:
    """``dataset`` itself for sanity=none, otherwise its supervision-detached version (which checks ``sanity``)."""
    return dataset if sanity == "none" else DetachedSupervision(dataset, sanity)
