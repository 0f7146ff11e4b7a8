"""Collect the result.json files of a sweep into one DataFrame (one row per run); never crashes on bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from xsample.methods import graph_label
from xsample.rundir.heartbeat import staleness

LABELS = ("table", "scale", "layout", "comparability", "method", "method_role", "method_targets", "dataset", "dataset_used", "setting", "variant", "seed")
# Two runs with the same identity are the same experiment: the newest one counts. The variant (what a
# run's config changes beyond its table's grid, e.g. "method.temperature=0.2") is part of it.
IDENTITY = ("table", "scale", "method", "dataset", "setting", "variant", "seed")
# "stale": result.json says running, but its heartbeat stopped and its process or SLURM job is gone.
# "interrupted": a signal stopped a local run after its checkpoint; relaunching resumes it.
STATUSES = ("completed", "running", "stale", "failed", "missing", "corrupt", "interrupted")
READABLE_STATUSES = ("completed", "running", "stale", "interrupted", "failed")  # a result.json was read
RECORDED_STATUSES = ("completed", "running", "interrupted", "failed")  # what the library writes
PLAN_FILE = "sweep_plan.json"
# What the known-answer checks read from a run's config: its sanity check and its graph (graph_label).
CONFIG_COLUMNS = ("sanity", "graph")
BASE_COLUMNS = ("path", "status", *LABELS, *CONFIG_COLUMNS, "error", "config_hash", "mtime", "superseded_by", "metrics",
                "loss_curve")


def collect_runs(sweep_dir: Path | str) -> pd.DataFrame:
    """One row per run: labels, status, error, config hash, flattened numeric metrics ("imagenet.top1", ...).

    The raw nested metrics stay in the "metrics" column (compute and fig5 need their structure), the
    training loss curve ([[step, loss], ...] or None) in "loss_curve".
    Runs of the sweep plan without a result.json have status "missing"; unreadable files "corrupt".
    A run replaced by a newer one with the same labels has "superseded_by" set to the newer run's path.
    """
    sweep_dir = Path(sweep_dir)
    rows = {}
    for result_file in sorted(sweep_dir.rglob("result.json")):
        run_dir = result_file.parent
        rows[run_dir.resolve()] = _read_result(result_file, _relative(run_dir, sweep_dir))
    _merge_plan(sweep_dir, rows)
    frame = pd.DataFrame(list(rows.values()))
    for column in BASE_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame = frame.astype({"seed": "object"}).sort_values([*IDENTITY, "path"],
                                                          na_position="last", key=lambda c: c.astype(str))
    _mark_superseded(frame)
    metric_columns = sorted(c for c in frame.columns if c not in BASE_COLUMNS)
    return frame[[*BASE_COLUMNS, *metric_columns]].reset_index(drop=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _read_result(result_file: Path, path: str) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path, "mtime": _mtime(result_file)}
    try:
        result = json.loads(result_file.read_text())
        if not isinstance(result, dict):
            raise ValueError("top level is not a JSON object")
        if result.get("status") not in RECORDED_STATUSES:
            raise ValueError(f"unknown status {result.get('status')!r}")
        experiment = result.get("experiment")
        if not isinstance(experiment, dict):
            raise ValueError("no 'experiment' labels")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return {**row, "status": "corrupt", "error": f"{type(error).__name__}: {error}"}
    row.update(_labels(experiment))
    if row["seed"] is None:
        row["seed"] = _labels({"seed": result.get("seed")})["seed"]
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    row.update(_config_columns(result.get("config")))
    row.update(status=result["status"], error=result.get("error"), config_hash=result.get("config_hash"),
               metrics=metrics, loss_curve=_loss_curve(result.get("loss_curve")), **_flatten(metrics))
    dead = staleness(result.get("heartbeat")) if result["status"] == "running" else None
    if dead is not None:
        row.update(status="stale", error=dead)
    return row


def _config_columns(config: Any) -> dict[str, Any]:
    """The run's sanity check and graph label; None for what a config (an old or hand-written file) lacks."""
    config = config if isinstance(config, dict) else {}
    sanity = config.get("sanity")
    try:
        graph = graph_label(config.get("graph"))
    except (KeyError, TypeError):
        graph = None
    return {"sanity": sanity if isinstance(sanity, str) else None, "graph": graph}


def _loss_curve(curve: Any) -> list[tuple[int, float]] | None:
    """[[step, loss], ...] as (int, float) pairs; anything else (absent, malformed) is None."""
    try:
        return [(int(step), float(loss)) for step, loss in curve] or None
    except (TypeError, ValueError):
        return None


def _labels(experiment: dict[str, Any]) -> dict[str, Any]:
    """Labels as strings (YAML and JSON may give table 1 as a number) and the seed as an int; a value of
    another type (an old or hand-edited file) becomes text rather than breaking the grouping."""
    labels = {label: experiment.get(label) for label in LABELS}
    for label, value in labels.items():
        if label == "seed":
            labels[label] = int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        elif value is not None and not isinstance(value, str):
            labels[label] = str(value)
    return labels


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves as "evaluation.metric" columns; lists (histograms, curves) are left out."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _plan_entries(plan_file: Path) -> list[tuple[str, dict[str, Any]]]:
    """(run_dir, labels) of every planned run ({"runs": [{"run_dir", "experiment"}]}, as experiments/plan.py
    writes it); an unreadable plan is ignored (the results still count)."""
    try:
        plan = json.loads(plan_file.read_text())
        return [(str(run["run_dir"]), dict(run["experiment"])) for run in plan["runs"]]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return []


def _merge_plan(sweep_dir: Path, rows: dict[Path, dict[str, Any]]) -> None:
    """Merge every sweep plan under ``sweep_dir`` (one per table sweep) into the rows."""
    for plan_file in sorted(sweep_dir.rglob(PLAN_FILE)):
        plan_dir = plan_file.parent.resolve()
        # Run names repeat across tables: the by-name fallback only looks inside this plan's sweep.
        by_name = {key.name: key for key in rows if plan_dir in key.parents}
        for run_dir, labels in _plan_entries(plan_file):
            planned = Path(run_dir) if Path(run_dir).is_absolute() else plan_file.parent / run_dir
            # A plan written on another machine has other absolute paths: fall back to the run's name.
            key = planned.resolve() if planned.resolve() in rows else by_name.get(planned.name)
            if key is None:
                rows[planned.resolve()] = {"path": _relative(planned, sweep_dir), "status": "missing", **_labels(labels)}
                continue
            for label, value in _labels(labels).items():  # a corrupt file keeps the labels the plan gave it
                if rows[key].get(label) is None:
                    rows[key][label] = value


def _mark_superseded(frame: pd.DataFrame) -> None:
    readable = frame[frame["status"].isin(READABLE_STATUSES)]
    for _, group in readable.groupby(list(IDENTITY), dropna=False, sort=False):
        if len(group) < 2:
            continue
        newest = group["mtime"].astype(float).fillna(0.0).idxmax()
        for index in group.index.drop(newest):
            same_config = frame.at[index, "config_hash"] == frame.at[newest, "config_hash"]
            frame.at[index, "superseded_by"] = frame.at[newest, "path"] + ("" if same_config else " (config hash differs)")


def current_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that count: those not replaced by a newer run of the same experiment."""
    return runs[runs["superseded_by"].isna()]
