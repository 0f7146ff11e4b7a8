"""Datasets by name (tiny embedded ones and paper-scale loaders), image decoding, the training item's fields,
labels and class-balanced subsets; the augmentations live in xsample/views/."""

# Importing a loader module registers its datasets.
from xsample.data import fashion_mnist, paper_datasets, shapes, webdataset_cc  # noqa: E402,F401
from xsample.data.registry import DATASETS, build_dataset, register_dataset, require_root
from xsample.data.subsets import class_balanced_subset, dataset_labels, root_dataset

__all__ = [
    "DATASETS", "build_dataset", "class_balanced_subset", "dataset_labels", "root_dataset", "register_dataset", "require_root",
]
