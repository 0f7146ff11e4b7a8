"""Reusing a completed run for another table's row that trains exactly the same.

Tables share runs: Fig. 3's full-data points are Table 2's SimCLR, SupCon and X-CLR rows, Table 4's
clean-caption rows are Table 3's CC3M rows, and the fine-tuning table's SimCLR base is Table 1's SimCLR;
each came out bit-identical when trained twice. Two run configs are *twins* when they differ only in their
labels (``experiment``: table, setting, layout ...), in settings that cannot act on them (``optim.budget`` at
data_fraction 1.0, where both budgets train the same steps), and in which evaluations they run, where the
completed one ran every evaluation the other asks for (each evaluation is seeded on its own, so a subset
scores the same). A planned run whose twin has completed under the same sweeps root adopts it instead of
training: its directory receives copies of the twin's checkpoint, probe and event files, relabelled with its
own config and hash, and a result.json holding the twin's numbers for its own evaluations and saying where
they came from (``reused_from``). result.json is written last, so an adoption that stops part-way leaves a
run that is planned as new again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from xsample.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, read_json
from xsample.models.classifier import PROBE_WEIGHTS, probe_file, probe_metadata
from xsample.rundir.checkpoint import CHECKPOINT_NAME
from xsample.rundir.identity import DERIVED_KEYS
from xsample.rundir.provenance import config_hash
from xsample.rundir.result import CONFIG_NAME, RESULT_NAME

# TensorBoard's event files: the twin's training curves are this run's too.
EVENT_FILE_PATTERN = "events.out.tfevents.*"


class TwinGone(RuntimeError):
    """The completed run a planned run was to adopt is no longer there (deleted or rerun since planning)."""


def training_identity(config: dict[str, Any]) -> str | None:
    """Hash of what a run trains and how it is scored, without its labels and its list of evaluations; None for
    a run that starts from another run (a fine-tune's base is a directory of its own sweep: no twin elsewhere)."""
    if config.get("init_from"):
        return None
    part = {key: value for key, value in config.items() if key not in DERIVED_KEYS}
    data, optim = part.get("data") or {}, part.get("optim")
    if isinstance(optim, dict) and float(data.get("fraction", 1.0)) == 1.0:
        part["optim"] = {key: value for key, value in optim.items() if key != "budget"}
    if isinstance(part.get("eval"), dict):
        part["eval"] = {key: value for key, value in part["eval"].items() if key != "evaluations"}
    return config_hash(part)   # which leaves out the runtime and placement keys too


def _evaluations(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list((config.get("eval") or {}).get("evaluations") or [])


def _ran_every_evaluation(evaluations: list[dict[str, Any]], config: dict[str, Any]) -> bool:
    """Whether a run that ran ``evaluations`` ran every one ``config`` asks for."""
    return all(evaluation in evaluations for evaluation in _evaluations(config))


def _names(config: dict[str, Any]) -> set[str]:
    return {evaluation["name"] for evaluation in _evaluations(config)}


def completed_runs(sweeps_root: Path) -> dict[str, list[tuple[Path, list[dict[str, Any]]]]]:
    """Training identity -> (directory, evaluations) of each completed run under ``sweeps_root``
    (``<root>/<sweep>/runs/<run>``) whose result.json holds its own config, in directory order."""
    found: dict[str, list[tuple[Path, list[dict[str, Any]]]]] = {}
    for result_path in sorted(Path(sweeps_root).glob(f"*/runs/*/{RESULT_NAME}")):
        result = read_json(result_path)
        if not isinstance(result, dict) or result.get("status") != "completed":
            continue
        config = result.get("config")
        if not isinstance(config, dict) or result.get("config_hash") != config_hash(config):
            continue
        identity = training_identity(config)
        if identity is not None:
            found.setdefault(identity, []).append((result_path.parent, _evaluations(config)))
    return found


def find_twin(config: dict[str, Any], completed: dict[str, list[tuple[Path, list[dict[str, Any]]]]]) -> Path | None:
    """The first completed run that trains as ``config`` does and ran every evaluation it asks for."""
    for run_dir, evaluations in completed.get(training_identity(config) or "", []):
        if _ran_every_evaluation(evaluations, config):
            return run_dir
    return None


def adopt_completed_run(source_dir: Path, run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Make ``run_dir`` (holding nothing of its own yet) ``config``'s completed run, from the twin in
    ``source_dir``; returns its result.json."""
    source_dir, run_dir = Path(source_dir), Path(run_dir)
    source = read_json(source_dir / RESULT_NAME)
    if not isinstance(source, dict) or source.get("status") != "completed":
        raise TwinGone(f"{source_dir} no longer holds the completed run that {run_dir.name} was to reuse (deleted or "
                       "rerun since planning); launch the same command again to plan it anew")
    identity = training_identity(config)
    if identity is None or identity != training_identity(source["config"]) or not _ran_every_evaluation(
            _evaluations(source["config"]), config):
        raise ValueError(f"{source_dir} does not train and evaluate what {run_dir.name} asks for; it cannot be reused")
    new_hash = config_hash(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG_NAME, config)
    checkpoint = source_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        atomic_torch_save({**state, "config_hash": new_hash}, run_dir / CHECKPOINT_NAME)
    probe = source_dir / PROBE_WEIGHTS
    if probe.is_file():
        metadata = probe_metadata(probe)
        if metadata["about"]["evaluation"] in _names(config):
            tensors = load_file(str(probe))  # stored as probe_file writes them: passed back unchanged
            atomic_write_bytes(run_dir / PROBE_WEIGHTS, probe_file(
                tensors["weight"], tensors["bias"], tensors["feature_mean"], tensors["feature_std"],
                metadata["class_names"], {**metadata["about"], "config_hash": new_hash}))
    for events in sorted(source_dir.glob(EVENT_FILE_PATTERN)):
        shutil.copy2(events, run_dir / events.name)
    origin = source.get("reused_from") or {"run_dir": str(source_dir.resolve()), "config_hash": source["config_hash"],
                                           "experiment": source.get("experiment")}
    # The twin's numbers for this run's evaluations only (metrics of another kind, graph diagnostics or
    # zero-shot, stay: the identity holds their settings).
    dropped = _names(source["config"]) - _names(config)
    metrics, details = ({name: value for name, value in (source.get(key) or {}).items() if name not in dropped}
                        for key in ("metrics", "eval_details"))
    skipped = sum(count for detail in details.values() for count in (detail.get("images_skipped") or {}).values())
    result = {**source, "experiment": config["experiment"], "config": config, "config_hash": new_hash,
              "reused_from": origin, "metrics": metrics, "eval_details": details,
              "data": {**source["data"], "eval_images_skipped": skipped}}
    atomic_write_json(run_dir / RESULT_NAME, result)
    return result

