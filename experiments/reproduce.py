"""Reproduce a table or figure of the X-CLR paper.

    python experiments/reproduce.py -m table=2                  # whole sweep (SLURM if available)
    python experiments/reproduce.py -m table=1 scale=tiny       # miniature, CPU, embedded data
    python experiments/reproduce.py -m table=3 launcher=plan    # print jobs + GPU-hours, run nothing

Every job writes <sweep dir>/runs/<run>/result.json; when the sweep ends, the table's report is
regenerated (analysis/) and its location printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.errors import MissingConfigException  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from experiments.run_config import ConfigError, build_run_config, run_name, sweep_dir  # noqa: E402
from experiments.sweep import (  # noqa: E402
    _option,
    check_choices,
    config_error_line,
    describe_jobs,
    expand,
    format_plan,
    slurm_available,
)
from xsample.io import atomic_write_json  # noqa: E402
from xsample.locks import exclusive_lock  # noqa: E402
from xsample.train.checkpoint import ConfigMismatchError  # noqa: E402
from xsample.train.provenance import config_hash  # noqa: E402
from xsample.train.run import is_completed, read_result, run_experiment  # noqa: E402


def _global_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


@contextmanager
def exclusive(run_dir: Path):
    """Serialise jobs that share a run directory (a finetune job training its missing base run
    while the base row's own job runs). Only global rank 0 locks: other ranks wait in collectives."""
    if _global_rank() != 0:
        yield
        return
    with exclusive_lock(run_dir / ".lock", what="run"):
        yield


def _execute(run_config: dict, run_dir: Path, *, force: bool) -> str:
    """Run one config unless already completed; returns the final status. An I/O failure (an
    unwritable or full run directory) fails this run only: the sweep goes on with the others."""
    try:
        return _execute_locked(run_config, run_dir, force=force)
    except OSError as error:
        print(f"xsample: {run_dir.name} failed: cannot write its run directory {run_dir}: {error} "
              "(result.json could not record it)", flush=True)
        return "failed"


def _execute_locked(run_config: dict, run_dir: Path, *, force: bool) -> str:
    name = run_dir.name
    with exclusive(run_dir):
        if is_completed(run_dir, run_config) and not force:
            print(f"xsample: {name}: already completed with the same config hash, skipped", flush=True)
            return "completed"
        previous = read_result(run_dir)
        stale = previous is not None and previous.get("config_hash") != config_hash(run_config)
        if force and _global_rank() == 0 and (stale or (previous or {}).get("status") in ("completed", "failed")):
            print(f"xsample: {name}: force=true, discarding the previous run in {run_dir}", flush=True)
            shutil.rmtree(run_dir)
        try:
            record = run_experiment(run_config, run_dir)
        except ConfigMismatchError as error:
            print(f"xsample: {name}: {error}", flush=True)
            return "failed"
        except Exception as error:  # recorded in result.json when writable; the sweep goes on with the other runs
            recorded = (read_result(run_dir) or {}).get("status") == "failed"
            where = f"see {run_dir / 'result.json'}" if recorded else "result.json could not record it"
            print(f"xsample: {name} failed: {type(error).__name__}: {error} ({where})", flush=True)
            return "failed"
    return record["status"]


def _finetune_base(cfg: DictConfig) -> tuple[dict, Path]:
    """The run config and directory of the base run a finetune row starts from."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("row=")]
    base_cfg = hydra.compose(config_name="reproduce", overrides=[*overrides, f"row={cfg.finetune_from}"])
    base = OmegaConf.to_container(base_cfg, resolve=True)
    config = build_run_config(base)
    return config, sweep_dir(base) / "runs" / run_name(config["experiment"])


@hydra.main(config_path="../configs", config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> str:
    composed = OmegaConf.to_container(cfg, resolve=True)
    run_config = build_run_config(composed)
    run_dir = sweep_dir(composed) / "runs" / run_name(run_config["experiment"])
    if cfg.get("finetune_from"):
        base_config, base_dir = _finetune_base(cfg)
        if _execute(base_config, base_dir, force=False) != "completed":
            print(f"xsample: {run_dir.name}: its base run {base_dir.name} did not complete; not fine-tuning", flush=True)
            return "failed"
        run_config["init_from"] = {"run_dir": str(base_dir), "config_hash": config_hash(base_config)}
    return _execute(run_config, run_dir, force=bool(cfg.force))


def _write_sweep_plans(jobs: list[dict]) -> dict[str, list[dict]]:
    by_sweep: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_sweep[job["sweep_dir"]].append(job)
    for directory, members in by_sweep.items():
        labels = members[0]["experiment"]
        atomic_write_json(Path(directory) / "sweep_plan.json", {
            "table": labels["table"], "scale": labels["scale"],
            "runs": [{"run_dir": job["run_dir"], "experiment": job["experiment"],
                      "overrides": job["overrides"]} for job in members],
        })
    return by_sweep


def _quote_numeric_tables(argv: list[str]) -> list[str]:
    """`table=2` names the config file table/2.yaml; Hydra would read 2 as an int and refuse it."""
    quoted = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "table" and value:
            value = ",".join(f"'{v}'" if v.isdigit() else v for v in value.split(","))
            arg = f"{key}={value}"
        quoted.append(arg)
    return quoted


def cli() -> None:
    sys.argv = _quote_numeric_tables(sys.argv)
    args = sys.argv[1:]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    check_choices(overrides)
    multirun = "-m" in args or "--multirun" in args
    launcher = _option(overrides, "launcher")
    plan = launcher == "plan" or str(_option(overrides, "plan")).lower() == "true"
    if plan:
        launcher, why = "plan", "nothing is submitted"
    elif launcher is None:
        available, reason = slurm_available()
        launcher, why = ("slurm" if available else "local"), f"auto: {reason}"
        sys.argv.append(f"launcher={launcher}")
    else:
        why = "chosen"
    try:
        jobs = describe_jobs(expand(overrides) if multirun else [overrides])
    except (ConfigError, MissingConfigException) as error:
        raise SystemExit(f"xsample: {config_error_line(error)}") from None
    sweeps = sorted({job["sweep_dir"] for job in jobs})
    print(f"xsample: launcher={launcher} ({why}); sweep dir: {', '.join(sweeps)}; {len(jobs)} job(s)", flush=True)
    if plan:
        print(format_plan(jobs))
        return
    if multirun:
        try:
            _write_sweep_plans(jobs)
        except OSError as error:
            raise SystemExit(f"xsample: {error}; make the sweep directory writable or set paths.sweeps=DIR") from None
    main()
    if multirun:
        # Every table under the sweeps root is re-rendered (cheap), so the reproduced-vs-reported
        # figure covers all claims measured so far, not only this table's.
        for sweeps_root, scale, report_dir in sorted({(str(Path(job["sweep_dir"]).parent), job["experiment"]["scale"],
                                                       job["report_dir"]) for job in jobs}):
            subprocess.run([sys.executable, "-m", "analysis", "report", sweeps_root, "--scale", scale,
                            "--out", report_dir], check=False)


if __name__ == "__main__":
    cli()
