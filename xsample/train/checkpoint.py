"""Full training state on disk: written atomically, refused when the config changed."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xsample.io import atomic_torch_save

CHECKPOINT_NAME = "checkpoint.pt"


class ConfigMismatchError(RuntimeError):
    """A run directory holds a checkpoint of a different configuration (resuming it would mix runs)."""


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    path = Path(run_dir) / CHECKPOINT_NAME
    atomic_torch_save({**state, "rng": rng_state()}, path)
    return path


def load_checkpoint(run_dir: Path, expected_config_hash: str) -> dict[str, Any] | None:
    """The run's last checkpoint, or None when it has none yet."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("config_hash") != expected_config_hash:
        raise ConfigMismatchError(
            f"{path} was written by a run with config hash {state.get('config_hash')}, but this run's "
            f"config hashes to {expected_config_hash}. Rerun with force=true to discard the old run, "
            "or restore the original config."
        )
    return state
