"""Datasets by name. Every dataset yields dict items:
``{"image": PIL RGB, "index": int, "label": int (-1 if none), "caption": str ("" if none)}``
plus dataset-specific extras ("attribute", "real_labels", ...)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

DATASETS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str):
    def decorate(builder: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = builder
        return builder

    return decorate


def build_dataset(name: str, split: str, root: str | os.PathLike | None = None, **options) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split=split, root=root, **options)


def require_root(name: str, root: str | os.PathLike | None, *, default: str | None = None) -> Path:
    """The dataset's root directory, from the argument, XSAMPLE_<NAME>_ROOT or a default; a clear
    error naming the config key and the variable when none exists on disk."""
    env = f"XSAMPLE_{name.upper()}_ROOT"
    candidate = root or os.environ.get(env) or default
    if candidate is None or not Path(candidate).exists():
        where = f"{candidate} does not exist" if candidate else "no root is set"
        raise FileNotFoundError(
            f"dataset {name}: {where}. Set paths.{name}=/path/to/{name} (or the environment variable {env})."
        )
    return Path(candidate)


def check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"dataset {name} has no split {split!r}; choose one of {', '.join(allowed)}")
