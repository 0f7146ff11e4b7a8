"""Datasets by name. Every dataset yields dict items:
``{"image": PIL RGB, "index": int, "label": int (-1 if none), "caption": str ("" if none)}``
plus dataset-specific extras ("attribute", "real_labels", ...; in-memory datasets: "rgb_pixels", see
xsample/data/items.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

DATASETS: dict[str, Callable[..., Dataset]] = {}
# Where a dataset is found when neither the config nor the environment names a root (a system package).
DEFAULT_ROOTS: dict[str, str] = {}
# Datasets whose items carry no class label (label -1): a run that reads labels is refused on them.
UNLABELLED_DATASETS: set[str] = set()


def register_dataset(name: str, *, default_root: str | None = None, labelled: bool = True):
    def decorate(builder: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = builder
        if default_root is not None:
            DEFAULT_ROOTS[name] = default_root
        if not labelled:
            UNLABELLED_DATASETS.add(name)
        return builder

    return decorate


def build_dataset(name: str, split: str, root: str | os.PathLike | None = None, **options) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split=split, root=root, **options)


def _root_candidate(name: str, root: str | os.PathLike | None) -> str | os.PathLike | None:
    return root or os.environ.get(f"XSAMPLE_{name.upper()}_ROOT") or DEFAULT_ROOTS.get(name)


def root_problem(name: str, root: str | os.PathLike | None) -> str | None:
    """Why the dataset's root (argument, XSAMPLE_<NAME>_ROOT or its default) cannot be used, naming the
    config key and the variable; None when it exists on disk."""
    candidate = _root_candidate(name, root)
    if candidate is not None and Path(candidate).exists():
        return None
    where = f"{candidate} does not exist" if candidate else "no root is set"
    return f"dataset {name}: {where}. Set paths.{name}=/path/to/{name} (or the environment variable XSAMPLE_{name.upper()}_ROOT)."


def require_root(name: str, root: str | os.PathLike | None) -> Path:
    """The dataset's root directory; FileNotFoundError with root_problem's message when it is missing."""
    problem = root_problem(name, root)
    if problem is not None:
        raise FileNotFoundError(problem)
    return Path(_root_candidate(name, root))


def check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"dataset {name} has no split {split!r}; choose one of {', '.join(allowed)}")
