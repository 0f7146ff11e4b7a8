"""Known-answer sanity runs: the training set with its supervision detached from the images.

``shuffled_labels``: every training image gets the label of another random image (a seeded permutation of
the label column, so class sizes stay the same but labels no longer match images; renaming class ids would
not do that). SupCon's class graph and X-CLR's class-name graph both read this label.
``misaligned_graph``: every sample gets the side information of another random sample: its label (class
graphs), its index (rows of the caption-embedding cache) and its caption (CLIP's text).
A correct pipeline then loses its supervised advantage; a pipeline whose supervised runs are no better than
these is not using its supervision.
``permuted_graph`` (X-CLR's text graph only): the graph keeps its values but loses their pairing. A class-name
graph's class rows are permuted over the classes (each class takes another class's text embedding: same
similarity distribution, same-class samples still share a row, wrong neighbours); a caption graph's rows are
permuted over the samples. The images, labels and captions of the dataset are untouched. A pipeline whose
X-CLR gains come from the graph's values loses them here; the class-graph case keeps SupCon's class identity,
so it separates "the graph's between-class values matter" from "the classes matter".
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, IterableDataset, Subset

from xsample.config import SANITY_CHECKS
from xsample.data import dataset_labels

# The checks that detach the dataset's own supervision (the others act on the graph, xsample.train.side_information).
DATASET_CHECKS = ("shuffled_labels", "misaligned_graph")
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
        if sanity not in DATASET_CHECKS:
            raise ValueError(f"DetachedSupervision needs sanity={' or '.join(DATASET_CHECKS)}, got {sanity}")
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
    """The supervision-detached version of ``dataset`` for the DATASET_CHECKS, otherwise ``dataset`` itself."""
    check_sanity(sanity)
    return DetachedSupervision(dataset, sanity) if sanity in DATASET_CHECKS else dataset


def graph_row_donors(count: int) -> np.ndarray:
    """``sanity=permuted_graph``: row i of the graph is taken from row ``donors[i]``. A seeded single cycle
    through all ``count`` rows, so no row keeps its own (a plain permutation of 10 classes leaves one class
    in place two times out of three)."""
    if count < 2:
        raise ValueError(f"sanity=permuted_graph needs at least 2 graph rows to permute, got {count}")
    order = np.random.default_rng(_PERMUTATION_SEED).permutation(count)
    donors = np.empty(count, dtype=np.int64)
    donors[order] = np.roll(order, -1)
    return donors
