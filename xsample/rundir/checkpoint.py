"""Full training state on disk: written atomically, refused when the config changed, and only
started when the disk has room for it (a full disk otherwise shows up as torch's "unexpected pos")."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xsample.io import atomic_torch_save, require_free_space

CHECKPOINT_NAME = "checkpoint.pt"
# Room beyond the tensors' bytes: pickled metadata, optimizer scalars, loss history.
CHECKPOINT_MARGIN_FRACTION = 0.1
CHECKPOINT_MARGIN_BYTES = 16 * 2**20


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


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor (and numpy array) inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write the state atomically after checking the disk has room for it (the old checkpoint stays
    until the new one is complete, so both must fit)."""
    path = Path(run_dir) / CHECKPOINT_NAME
    state = {**state, "rng": rng_state()}
    needed = int(tensor_bytes(state) * (1 + CHECKPOINT_MARGIN_FRACTION)) + CHECKPOINT_MARGIN_BYTES
    require_free_space(run_dir, needed, "checkpoint")
    atomic_torch_save(state, path)
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
