"""Expanding a table's sweep before launching: the plan, the expected runs, the launcher choice.

The expansion reuses Hydra's own override grammar and BasicSweeper's cartesian product, so the
job list printed here is exactly what `-m` launches.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict

from experiments.run_config import (
    CONFIGS_DIR,
    ConfigError,
    InvalidValues,
    build_run_config,
    resources,
    value_problems,
)
from xsample.train.identity import run_name, variant, variant_label, variant_tag
from xsample.train.provenance import config_hash

TABLES = sorted(p.stem for p in (CONFIGS_DIR / "table").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONFIGS_DIR / "launcher").glob("*.yaml"))


def slurm_available() -> tuple[bool, str]:
    """Whether SLURM can take jobs here: sbatch on PATH and a controller that answers."""
    if shutil.which("sbatch") is None:
        return False, "no sbatch on PATH"
    try:
        answer = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False, "scontrol ping did not answer"
    if answer.returncode == 0 and "UP" in answer.stdout:
        return True, "sbatch found and the SLURM controller answered"
    return False, "sbatch found but no SLURM controller answered"


def _key(override: str) -> str:
    """The key an override sets: ``+row=x``, ``~row`` and ``row=x`` all set ``row``."""
    return override.split("=", 1)[0].lstrip("+~")


def _option(overrides: list[str], key: str) -> str | None:
    values = [o.split("=", 1)[1] for o in overrides if _key(o) == key]
    return values[-1] if values else None


def check_choices(overrides: list[str]) -> None:
    """Clear errors for the two choices users mistype most, before Hydra's longer messages."""
    table = _option(overrides, "table")
    unknown = [t.strip("'\"") for t in (table or "").split(",") if t and t.strip("'\"") not in TABLES]
    if table is not None and "," in table:
        raise SystemExit("xsample: sweep one table per command (each table owns its own grid), e.g. -m table=1")
    if unknown:
        raise SystemExit(f"xsample: unknown table {', '.join(unknown)}; choose one of: {', '.join(TABLES)} (configs/table/)")
    launcher = _option(overrides, "launcher")
    if launcher is not None and launcher not in LAUNCHERS:
        raise SystemExit(f"xsample: unknown launcher {launcher!r}; choose one of: {', '.join(LAUNCHERS)}")


def config_error_line(error: ConfigError | HydraException) -> str:
    """One line for a config that cannot be composed; Hydra's own message goes on with its search path."""
    first = str(error).splitlines()[0]
    options = getattr(error, "options", None)
    if options:
        return f"{first}; choose one of: {', '.join(options)}"
    if first.startswith("Could not override"):  # an unknown key: Hydra's config is strict
        return f"{first} It is not a key of the config (a typo?); see configs/ for the keys there are"
    return first


def _compose(overrides: list[str], *, with_hydra: bool = False):
    return compose(config_name="reproduce", overrides=overrides, return_hydra_config=with_hydra)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


# What the reference of a run keeps from its overrides besides the table's own grid keys.
REFERENCE_KEYS = ("table", "scale")


@dataclass
class PlannedRun:
    """One run as a sweep job describes it: its config, its directory, and what its job needs."""

    config: dict[str, Any]
    run_dir: Path
    composed: dict[str, Any]
    base: PlannedRun | None = None   # the run a fine-tuning run starts from

    @property
    def sweep_dir(self) -> Path:
        return self.run_dir.parent.parent


def _composed_with_grid(overrides: list[str]) -> tuple[dict[str, Any], list[str], Path]:
    """The resolved composed config, the table's own grid keys (hydra.sweeper.params) and the sweep
    directory (hydra.sweep.dir in configs/reproduce.yaml, the one place that names it)."""
    cfg = _compose(overrides, with_hydra=True)
    grid = [str(key) for key in (OmegaConf.select(cfg, "hydra.sweeper.params") or {})]
    sweep = Path(OmegaConf.select(cfg, "hydra.sweep.dir"))
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True), grid, sweep


@lru_cache(maxsize=64)
def _reference_config(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The run config of a reference (many jobs of a sweep share one; read only, never modified)."""
    return build_run_config(_composed_with_grid(list(overrides))[0])


def plan_run(overrides: list[str]) -> PlannedRun:
    """Compose one job's run (needs an initialised Hydra) and name it by its identity.

    The reference is the same table, scale and grid point without the job's other overrides; every
    difference of the resolved run config against it is the run's variant (xsample.train.identity)."""
    composed, grid, sweep = _composed_with_grid(overrides)
    problems = value_problems(composed)
    if problems:
        raise InvalidValues(problems)
    config = build_run_config(composed)
    reference = _reference_config(tuple(o for o in overrides if _key(o) in (*REFERENCE_KEYS, *grid)))
    departures = variant(config, reference)
    config["experiment"].update(variant=variant_label(departures), variant_tag=variant_tag(departures))
    planned = PlannedRun(config, sweep / "runs" / run_name(config["experiment"]), composed)
    if composed.get("finetune_from"):
        planned.base = plan_run([o for o in overrides if _key(o) != "row"] + [f"row={composed['finetune_from']}"])
        config["init_from"] = {"run_dir": str(planned.base.run_dir), "config_hash": config_hash(planned.base.config)}
    return planned


def expand(overrides: list[str]) -> list[list[str]]:
    """The override list of every job of the multirun ``overrides`` describe."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
        primary = _compose(fixed, with_hydra=True)
        params = [f"{k}={v}" for k, v in (primary.hydra.sweeper.params or {}).items()]
        parsed = parser.parse_overrides(params + overrides)
        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def describe_jobs(jobs: list[list[str]]) -> list[dict[str, Any]]:
    """Per job: labels, run directory (relative to the sweep dir), config hash, resources, and the
    planned runs themselves (``planned``: the job's run, then the base run a fine-tuning job starts from).
    Settings out of range in any job raise InvalidValues listing them all."""
    described, problems = [], {}
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
            for job in jobs:
                try:
                    planned = plan_run(job)
                except InvalidValues as error:  # every job is checked, so that all problems show at once
                    problems.update(dict.fromkeys(error.problems))
                    continue
                cfg = planned.composed
                described.append({
                    "overrides": job, "experiment": planned.config["experiment"],
                    "run_dir": f"runs/{planned.run_dir.name}", "config_hash": config_hash(planned.config),
                    "resources": resources(cfg), "sweep_dir": str(planned.sweep_dir),
                    "report_dir": str(Path(cfg["paths"]["figures"]) / cfg["scale"]["name"]),
                    "planned": [run for run in (planned, planned.base) if run is not None],
                    "finetune_from": cfg.get("finetune_from"),
                })
    finally:
        GlobalHydra.instance().clear()
    if problems:
        raise InvalidValues(list(problems))
    return described


def format_plan(jobs: list[dict[str, Any]]) -> str:
    lines = [f"{'run':<48} {'nodes':>5} {'gpus':>5} {'cpus':>5} {'mem_gb':>6} {'time_min':>8} {'gpu_h':>7}"]
    total = 0.0
    for job in jobs:
        res = job["resources"]
        total += res["est_gpu_hours"]
        lines.append(
            f"{job['run_dir'][5:]:<48} {res['nodes']:>5} {res['nodes'] * res['gpus_per_node']:>5} "
            f"{res['cpus_per_task'] * res['tasks_per_node']:>5} {res['mem_gb']:>6} {res['timeout_min']:>8} "
            f"{res['est_gpu_hours']:>7.1f}"
        )
    lines.append(f"{len(jobs)} jobs, estimated total {total:.1f} GPU-hours (rough harness estimate: "
                 "configs/datasets/*.yaml gpu_hours_per_epoch x epochs, x data fraction under budget=epochs)")
    return "\n".join(lines)
