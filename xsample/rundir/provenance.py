"""What a result.json records about where and how it was produced."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

# Keys that change where or how fast a run executes but not what it computes.
RUNTIME_ONLY_KEYS = ("runtime", "paths", "launcher", "force", "resources")
# Where the training data lives is placement too: a dataset moved to another disk is the same run.
PLACEMENT_DATA_KEYS = ("root",)

_PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "sentence-transformers", "webdataset", "xsample")


def determining_part(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that determines its numbers (no runtime or placement keys)."""
    relevant = {key: value for key, value in config.items() if key not in RUNTIME_ONLY_KEYS}
    if isinstance(relevant.get("data"), dict):
        relevant["data"] = {key: value for key, value in relevant["data"].items() if key not in PLACEMENT_DATA_KEYS}
    return relevant


def config_hash(config: dict[str, Any]) -> str:
    """Stable hash of everything that determines a run's numbers."""
    canonical = json.dumps(determining_part(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(repo: Path | None = None) -> dict[str, Any]:
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo, check=True, capture_output=True, text=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def hardware(device: torch.device, world_size: int) -> dict[str, Any]:
    on_gpu = device.type == "cuda"
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or platform.machine(),
        "device_count": torch.cuda.device_count() if on_gpu else 1,
        "world_size": world_size,
        "hostname": socket.gethostname(),
        "cpu_threads": torch.get_num_threads(),
    }
