"""A run's result.json: its name, reading it, whether a directory belongs to a config, and the writer that
keeps it (and the run's heartbeat) current."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from xsample.config import RunConfig
from xsample.io import atomic_write_json, read_json
from xsample.rundir.checkpoint import CHECKPOINT_NAME, ConfigMismatchError
from xsample.rundir.heartbeat import beat, new_heartbeat, public
from xsample.rundir.identity import config_differences, describe_differences
from xsample.rundir.provenance import config_hash, git_state, hardware, package_versions
from xsample.train.distributed import DistInfo

RESULT_NAME = "result.json"
# The run config a planned job executes (written by the planner before anything is submitted).
CONFIG_NAME = "config.json"
# What result.json records about where a run came from (the W&B config carries it too).
PROVENANCE_KEYS = ("config_hash", "git_commit", "git_dirty", "versions", "hardware")


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result.json, or None when absent or unreadable."""
    result = read_json(Path(run_dir) / RESULT_NAME)
    return result if isinstance(result, dict) else None


def _recorded_hash(run_dir: Path) -> tuple[str | None, dict[str, Any] | None, str]:
    """(config hash, config, where it was read) of the run already in ``run_dir``."""
    result = read_result(run_dir)
    if isinstance(result, dict):
        config = result.get("config") if isinstance(result.get("config"), dict) else None
        return result.get("config_hash"), config, RESULT_NAME
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.exists():
        try:  # memory-mapped: only the small config_hash entry is actually read
            state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
            return state.get("config_hash"), None, CHECKPOINT_NAME
        except Exception:  # an unreadable checkpoint cannot prove the directory is ours  # noqa: BLE001
            return None, None, CHECKPOINT_NAME
    return None, None, ""


def ownership_problem(run_dir: Path | str, config: RunConfig) -> str | None:
    """Why ``run_dir`` is not ``config``'s own directory, or None when it is (or holds nothing yet)."""
    run_dir, config = Path(run_dir), config.to_dict()
    recorded, recorded_config, source = _recorded_hash(run_dir)
    if not source:
        result_file = run_dir / RESULT_NAME
        if result_file.exists():  # present but unreadable: it may be someone's finished result
            return f"{result_file} cannot be read; move it away (or delete it) to run here"
        return None
    if recorded == config_hash(config):
        return None
    if recorded_config is not None:
        what = f"differs in: {describe_differences(config_differences(recorded_config, config))}"
    else:
        what = f"its {source} records {'config hash ' + recorded if recorded else 'no readable config'}"
    return (f"{run_dir} belongs to another config ({what}); it was left untouched. Keep both by setting "
            "paths.sweeps to another directory, or move that run away to rerun here (force=true only "
            "discards runs of the same config)")


class RunDirectoryConflict(ConfigMismatchError):
    """The run directory holds another config's run; nothing in it was touched."""


class ResultWriterError(OSError):
    """The run failed and result.json could not record it (unwritable directory, full disk)."""


class ResultWriter:
    """Keeps result.json current; only the main rank writes. Every write refreshes the heartbeat
    (host, pid, SLURM ids, last_update) that `analysis status` uses to tell a dead run from a live one.
    Thread-safe: the failure watchdog records another rank's failure from its own thread."""

    def __init__(self, run_dir: Path, config: RunConfig, info: DistInfo,
                 previous_failure: dict[str, Any] | None = None):
        self.path = Path(run_dir) / RESULT_NAME
        self.info = info
        self.previous_failure = previous_failure  # the last attempt's, to tell a deterministic failure
        recorded = config.to_dict()
        self.record: dict[str, Any] = {
            "status": "running",
            "experiment": recorded["experiment"],
            "metrics": {},
            "config": recorded,
            "config_hash": config_hash(recorded),
            **git_state(),
            "versions": package_versions(),
            "hardware": hardware(info.device, info.world_size),
            "data": {"dataset": config.data.name},
            "timing": {},
            "resumed_from": None,
            "seed": config.seed,
        }
        self._heartbeat = new_heartbeat()
        self._lock = threading.RLock()

    def update(self, **fields: Any) -> None:
        self._write(fields, log_step=None)

    def log_step(self, step: int) -> None:
        """Heartbeat at a training log step."""
        self._write({}, log_step=step)

    def record_failure(self, report: dict[str, Any]) -> None:
        """status failed with ``report`` (rank, step, error[, traceback]); the first report of a run stays.
        A failure at the step where the previous attempt failed too is marked deterministic (``repeats``)."""
        with self._lock:
            if self.record.get("status") == "failed":
                return
            previous = self.previous_failure or {}
            repeats = previous.get("repeats", 1) + 1 if "step" in previous and previous["step"] == report["step"] else 1
            where = "before training" if report["step"] is None else f"at step {report['step']}"
            error = report["error"] if self.info.world_size == 1 else f"rank {report['rank']}: {report['error']}"
            if repeats > 1:
                error += (f" (attempt {repeats} to fail {where}: the failure is deterministic; fix its cause "
                          "before relaunching)")
            self.update(status="failed", error=error, traceback=report.get("traceback"),
                        failure={"rank": report["rank"], "step": report["step"], "repeats": repeats})

    def _write(self, fields: dict[str, Any], log_step: int | None) -> None:
        with self._lock:
            self.record.update(fields)
            if self.info.is_main:
                beat(self._heartbeat, log_step)
                self.record["heartbeat"] = public(self._heartbeat)
                atomic_write_json(self.path, self.record)
