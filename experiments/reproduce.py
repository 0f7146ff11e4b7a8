"""Reproduce a table or figure of the X-CLR paper.

    python experiments/reproduce.py -m table=2                  # whole sweep (SLURM if available)
    python experiments/reproduce.py -m table=1 scale=tiny       # miniature, CPU, embedded data
    python experiments/reproduce.py -m table=3 launcher=plan    # print jobs + GPU-hours, run nothing

Every job writes <sweep dir>/runs/<run>/result.json; when the sweep ends, the table's report is
regenerated (analysis/) and its location printed. A fine-tuning row starts from another row's run: the
launch then has two phases, the base rows first (to completion, whatever the launcher), then the rows
that fine-tune them, so no job waits inside its process group for another job's training.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO))

import hydra  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
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
from xsample.train.checkpoint import ConfigMismatchError  # noqa: E402
from xsample.train.provenance import config_hash  # noqa: E402
from xsample.train.run import is_completed, read_result, run_experiment  # noqa: E402


def _global_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def _execute(run_config: dict, run_dir: Path, *, force: bool) -> str:
    """Run one config unless already completed; returns the final status."""
    name = run_dir.name
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
    except Exception as error:  # recorded in result.json; the sweep goes on with the other runs
        print(f"xsample: {name} failed: {type(error).__name__}: {error} (see {run_dir / 'result.json'})", flush=True)
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
        if not is_completed(base_dir, base_config):  # cli() launched the base rows in an earlier phase
            print(f"xsample: {run_dir.name}: its base run {base_dir} has not completed (row={cfg.finetune_from}); "
                  "not fine-tuning", flush=True)
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


def _launch_phases(args: list[str], jobs: list[dict]) -> list[list[str]]:
    """The command lines to launch one after another: the original one, or, when some rows fine-tune
    another row's run, the base rows (with the rows not involved) first, then the fine-tuning rows."""
    finetune_rows = sorted({_option(job["overrides"], "row") for job in jobs if job["finetune_from"]})
    if not finetune_rows:
        return [args]
    first_rows = {_option(job["overrides"], "row") or "none" for job in jobs if not job["finetune_from"]}
    first_rows |= {job["finetune_from"] for job in jobs if job["finetune_from"]}
    others = [arg for arg in args if arg.split("=", 1)[0].lstrip("+~") != "row"]
    return [[*others, f"row={','.join(sorted(first_rows))}"], [*others, f"row={','.join(finetune_rows)}"]]


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
        _write_sweep_plans(jobs)
    program = sys.argv[0]
    phases = _launch_phases(sys.argv[1:], jobs)
    for number, phase in enumerate(phases, start=1):
        if len(phases) > 1:
            print(f"xsample: phase {number} of {len(phases)}: row={_option(phase, 'row')}", flush=True)
        sys.argv = [program, *phase]
        GlobalHydra.instance().clear()
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
