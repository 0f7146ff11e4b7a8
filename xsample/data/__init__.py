"""Datasets by name (tiny embedded ones and paper-scale loaders), augmentations and view wrappers."""

# Importing a loader module registers its datasets.
from xsample.data import fashion_mnist, paper_datasets, shapes, webdataset_cc  # noqa: E402,F401
from xsample.data.augment import AugmentRecipe, eval_transform, training_augmentation
from xsample.data.registry import DATASETS, build_dataset, register_dataset, require_root
from xsample.data.views import class_balanced_subset, dataset_labels, root_dataset

__all__ = [
    "DATASETS", "AugmentRecipe", "build_dataset", "class_balanced_subset", "dataset_labels", "root_dataset", "eval_transform",
    "register_dataset", "require_root", "training_augmentation",
]
