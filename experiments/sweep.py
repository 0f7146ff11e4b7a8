"""Expanding a table's sweep before launching: the plan, the expected runs, the launcher choice.

The expansion reuses Hydra's own override grammar and BasicSweeper's cartesian product, so the
job list printed here is exactly what `-m` launches.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from experiments.run_config import (
    CONFIGS_DIR,
    ConfigError,
    build_run_config,
    experiment_labels,
    resources,
    run_name,
    sweep_dir,
)

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


def _option(overrides: list[str], key: str) -> str | None:
    values = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == key]
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


def config_error_line(error: ConfigError | MissingConfigException) -> str:
    """One line for a config that cannot be composed; Hydra's own message goes on with its search path."""
    first = str(error).splitlines()[0]
    options = getattr(error, "options", None)
    return f"{first}; choose one of: {', '.join(options)}" if options else first


def _compose(overrides: list[str], *, with_hydra: bool = False):
    return compose(config_name="reproduce", overrides=overrides, return_hydra_config=with_hydra)


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
    """Per job: labels, run directory (relative to the sweep dir) and resources."""
    described = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
        for job in jobs:
            cfg = OmegaConf.to_container(_compose(job), resolve=True)
            labels = experiment_labels(cfg)
            build_run_config(cfg)  # fail here, before anything is submitted, on a config that cannot run
            described.append({
                "overrides": job, "experiment": labels, "run_dir": f"runs/{run_name(labels)}",
                "resources": resources(cfg), "sweep_dir": str(sweep_dir(cfg)),
                "report_dir": str(Path(cfg["paths"]["figures"]) / cfg["scale"]["name"]),
                "finetune_from": cfg.get("finetune_from"),
            })
    GlobalHydra.instance().clear()
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
                 "configs/datasets/*.yaml gpu_hours_per_epoch x epochs x data fraction)")
    return "\n".join(lines)
