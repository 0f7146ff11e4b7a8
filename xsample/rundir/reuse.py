"""Reusing a completed run for another table's row that trains and evaluates exactly the same.

Tables share runs: Fig. 3's full-data points are Table 2's SimCLR, SupCon and X-CLR rows, and their
numbers come out bit-identical when trained twice. Two run configs are *twins* when they differ only in
their labels (``experiment``: table, setting, layout ...) and in settings that cannot act on them
(``optim.budget`` at data_fraction 1.0, where both budgets train the same steps). A planned run whose twin
has completed under the same sweeps root adopts it instead of training: its directory receives copies of
the twin's checkpoint, probe and event files, re-labelled with its own config and hash, and a result.json
that says where the numbers came from (``reused_from``). result.json is written last, so an adoption that
stops part-way leaves a run that is planned as new again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from xsample.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, read_json
from xsample.models.classifier import PROBE_WEIGHTS, probe_metadata
from xsample.rundir.checkpoint import CHECKPOINT_NAME
from xsample.rundir.identity import DERIVED_KEYS
from xsample.rundir.provenance import config_hash, determining_part
from xsample.rundir.result import CONFIG_NAME, RESULT_NAME

# TensorBoard's event files: the twin's training curves are this run's too.
EVENT_FILE_PATTERN = "events.out.tfevents.*"


def training_identity(config: dict[str, Any]) -> str | None:
    """Hash of what a run computes, without its labels; None for a run that starts from another run
    (a fine-tune's base is a directory of its own sweep, so it has no twin elsewhere)."""
    if config.get("init_from"):
        return None
    part = {key: value for key, value in determining_part(config).items() if key not in DERIVED_KEYS}
    data, optim = part.get("data") or {}, part.get("optim")
    if isinstance(optim, dict) and float(data.get("fraction", 1.0)) == 1.0:
        part["optim"] = {key: value for key, value in optim.items() if key != "budget"}
    canonical = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def completed_runs(sweeps_root: Path) -> dict[str, Path]:
    """Training identity -> a completed run under ``sweeps_root`` (``<root>/<sweep>/runs/<run>``) whose
    result.json holds its own config; the first in directory order when several do."""
    found: dict[str, Path] = {}
    for result_path in sorted(Path(sweeps_root).glob(f"*/runs/*/{RESULT_NAME}")):
        result = read_json(result_path)
        if not isinstance(result, dict) or result.get("status") != "completed":
            continue
        config = result.get("config")
        if not isinstance(config, dict) or result.get("config_hash") != config_hash(config):
            continue
        identity = training_identity(config)
        if identity is not None:
            found.setdefault(identity, result_path.parent)
    return found


def adopt_completed_run(source_dir: Path, run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Make ``run_dir`` (holding nothing of its own yet) ``config``'s completed run, from the twin in
    ``source_dir``; returns its result.json."""
    source_dir, run_dir = Path(source_dir), Path(run_dir)
    source = read_json(source_dir / RESULT_NAME)
    if training_identity(source["config"]) != training_identity(config):
        raise ValueError(f"{source_dir} does not train what {run_dir.name} trains; it cannot be reused for it")
    new_hash = config_hash(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG_NAME, config)
    checkpoint = source_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        atomic_torch_save({**state, "config_hash": new_hash}, run_dir / CHECKPOINT_NAME)
    probe = source_dir / PROBE_WEIGHTS
    if probe.is_file():
        atomic_write_bytes(run_dir / PROBE_WEIGHTS, _relabelled_probe(probe, new_hash))
    for events in sorted(source_dir.glob(EVENT_FILE_PATTERN)):
        shutil.copy2(events, run_dir / events.name)
    origin = source.get("reused_from") or {"run_dir": str(source_dir.resolve()), "config_hash": source["config_hash"],
                                           "experiment": source.get("experiment")}
    result = {**source, "experiment": config["experiment"], "config": config, "config_hash": new_hash,
              "reused_from": origin}
    atomic_write_json(run_dir / RESULT_NAME, result)
    return result


def _relabelled_probe(path: Path, new_hash: str) -> bytes:
    """The probe file's bytes with its ``about`` block naming the adopting run's config hash."""
    metadata = probe_metadata(path)
    about = {**metadata["about"], "config_hash": new_hash}
    return save(load_file(str(path)), metadata={"class_names": json.dumps(metadata["class_names"]),
                                                "about": json.dumps(about)})
