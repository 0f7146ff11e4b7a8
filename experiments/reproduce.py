"""Reproduce a table or figure of the X-CLR paper.

    python experiments/reproduce.py -m table=2                  # whole sweep (SLURM if available)
    python experiments/reproduce.py -m table=1 scale=tiny       # miniature, CPU, embedded data
    python experiments/reproduce.py -m table=3 launcher=plan    # print jobs + GPU-hours, run nothing
    torchrun --standalone --nproc_per_node 8 experiments/reproduce.py table=1 method=xclr   # one run, 8 ranks

Every job writes <sweep dir>/runs/<run>/result.json; when the sweep ends, the table's report is
regenerated (analysis/) and its location printed. A fine-tuning row starts from another row's run: the
launch then has two phases, the base rows first (to completion, whatever the launcher), then the rows
that fine-tune them, so no job waits inside its process group for another job's training.

Under torchrun every rank runs this command for one run (no -m, the local launcher): rank 0 alone checks
the inputs, plans and writes the result; the other ranks only join the run. A signal that stops a local
run ends the command with one line (result.json says interrupted; the same command resumes) and status
128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import os
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
from hydra.errors import HydraException  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.run_config import ConfigError, InvalidValues  # noqa: E402
from experiments.sweep import (  # noqa: E402
    _key,
    _option,
    check_choices,
    config_error_line,
    describe_jobs,
    expand,
    format_plan,
    plan_run,
    slurm_available,
)
from xsample.io import atomic_write_json  # noqa: E402
from xsample.train.distributed import environment_ranks  # noqa: E402
from xsample.train.lifecycle import execute_run  # noqa: E402
from xsample.train.preemption import RunInterrupted  # noqa: E402
from xsample.train.provenance import config_hash  # noqa: E402
from xsample.train.run import RESULT_NAME, ownership_problem, read_result  # noqa: E402
from xsample.train.validate import input_problems  # noqa: E402


def _log(line: str) -> None:
    print(line, flush=True)


@hydra.main(config_path="../configs", config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> str:
    planned = plan_run(list(HydraConfig.get().overrides.task))
    if planned.base is not None and not _completed(planned.base):  # cli() launched it in an earlier phase
        _log(f"xsample: {planned.run_dir.name}: its base run {planned.base.run_dir} has not completed "
             f"(row={cfg.finetune_from}); not fine-tuning")
        return "failed"
    return execute_run(planned.config, planned.run_dir, force=bool(cfg.force), log=_log).status


def _completed(planned) -> bool:
    result = read_result(planned.run_dir)
    return result is not None and result.get("status") == "completed" and result.get("config_hash") == config_hash(planned.config)


def _launch_phases(args: list[str], jobs: list[dict]) -> list[list[str]]:
    """The command lines to launch one after another: the original one, or, when some rows fine-tune
    another row's run, the base rows (with the rows not involved) first, then the fine-tuning rows."""
    finetune_rows = sorted({_option(job["overrides"], "row") for job in jobs if job["finetune_from"]})
    if not finetune_rows:
        return [args]
    first_rows = {_option(job["overrides"], "row") or "none" for job in jobs if not job["finetune_from"]}
    first_rows |= {job["finetune_from"] for job in jobs if job["finetune_from"]}
    others = [arg for arg in args if _key(arg) != "row"]
    return [[*others, f"row={','.join(sorted(first_rows))}"], [*others, f"row={','.join(finetune_rows)}"]]


def _missing_inputs(jobs: list[dict]) -> list[str]:
    """Every missing input of every run of the sweep (dataset roots, text encoders), each once."""
    found: dict[str, None] = {}
    for job in jobs:
        for planned in job["planned"]:
            found.update(dict.fromkeys(input_problems(planned.config)))
    return list(found)


def _refuse(problems: list[str]) -> None:
    print("\n".join(f"xsample: {problem}" for problem in problems), file=sys.stderr, flush=True)
    raise SystemExit(f"xsample: {len(problems)} problem(s) above; nothing was run")


def _unfinished(jobs: list[dict]) -> list[str]:
    """One line per run of the sweep that did not end completed with its own config, read from the
    result.json files (so it works whichever launcher ran the jobs, and wherever)."""
    lines, seen = [], set()
    for job in jobs:
        for planned in job["planned"]:
            if planned.run_dir in seen:
                continue
            seen.add(planned.run_dir)
            result_path = planned.run_dir / RESULT_NAME
            result = read_result(planned.run_dir)
            if result is None:
                why = "no readable result.json: the job did not start, was cancelled, or died before writing it"
            elif result.get("config_hash") != config_hash(planned.config):
                why = f"refused: {ownership_problem(planned.run_dir, planned.config)}"
            elif result.get("status") != "completed":
                error = str(result.get("error") or "no error recorded").splitlines()[0]
                why = f"{result.get('status')}: {error}"
            else:
                continue
            lines.append(f"  {planned.run_dir.name}: {why} ({result_path})")
    return lines


def _write_sweep_plans(jobs: list[dict]) -> dict[str, list[dict]]:
    by_sweep: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_sweep[job["sweep_dir"]].append(job)
    for directory, members in by_sweep.items():
        labels = members[0]["experiment"]
        atomic_write_json(Path(directory) / "sweep_plan.json", {
            "table": labels["table"], "scale": labels["scale"],
            "runs": [{"run_dir": job["run_dir"], "experiment": job["experiment"], "config_hash": job["config_hash"],
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


def _torchrun_rank(args: list[str], overrides: list[str]) -> int | None:
    """This process's rank when torchrun started it (None otherwise), after refusing what torchrun cannot do:
    each rank runs the same single run, in this process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank = environment_ranks()[0]
    launcher = _option(overrides, "launcher")
    if "-m" in args or "--multirun" in args or launcher not in (None, "local"):
        if rank == 0:
            print("xsample: under torchrun, run one run with the local launcher (no -m, no launcher=slurm|plan): "
                  "the ranks of one run are the processes torchrun started", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return rank


def _run_interruptibly(run) -> None:
    """``run()``; a run stopped by a signal ends the command with its one line, no traceback."""
    try:
        run()
    except RunInterrupted as stop:
        print(f"xsample: interrupted: {stop}", file=sys.stderr, flush=True)
        raise SystemExit(128 + stop.signum) from None


def cli() -> None:
    sys.argv = _quote_numeric_tables(sys.argv)
    args = sys.argv[1:]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    rank = _torchrun_rank(args, overrides)
    if rank is not None:
        if _option(overrides, "launcher") is None:
            sys.argv.append("launcher=local")
        if rank > 0:  # rank 0 checks, plans and reports; the others only join the run
            _run_interruptibly(main)
            return
    check_choices(overrides)
    if _option(overrides, "hydra.sweep.dir") is not None:
        raise SystemExit("xsample: hydra.sweep.dir is not used: runs live in <paths.sweeps>/table<id>_<scale>/; "
                         "move them with paths.sweeps=DIR (or XSAMPLE_SWEEPS=DIR)")
    multirun = "-m" in args or "--multirun" in args
    launcher = _option(overrides, "launcher")
    plan = launcher == "plan" or str(_option(overrides, "plan")).lower() == "true"
    if plan:
        launcher, why = "plan", "nothing is submitted"
    elif rank is not None:
        launcher, why = "local", "torchrun: every rank runs this one run"
    elif launcher is None:
        available, reason = slurm_available()
        launcher, why = ("slurm" if available else "local"), f"auto: {reason}"
        sys.argv.append(f"launcher={launcher}")
    else:
        why = "chosen"
    try:
        jobs = describe_jobs(expand(overrides) if multirun else [overrides])
    except InvalidValues as error:
        _refuse(error.problems)
    except (ConfigError, HydraException) as error:
        raise SystemExit(f"xsample: {config_error_line(error)}") from None
    sweeps = sorted({job["sweep_dir"] for job in jobs})
    print(f"xsample: launcher={launcher} ({why}); sweep dir: {', '.join(sweeps)}; {len(jobs)} job(s)", flush=True)
    problems = _missing_inputs(jobs)
    if plan:
        print(format_plan(jobs))
    if problems:
        _refuse(problems)
    if plan:
        return
    if multirun:
        try:
            _write_sweep_plans(jobs)
        except OSError as error:
            raise SystemExit(f"xsample: {error}; make the sweep directory writable or set paths.sweeps=DIR") from None
    program = sys.argv[0]
    phases = _launch_phases(sys.argv[1:], jobs)
    for number, phase in enumerate(phases, start=1):
        if len(phases) > 1:
            print(f"xsample: phase {number} of {len(phases)}: row={_option(phase, 'row')}", flush=True)
        sys.argv = [program, *phase]
        GlobalHydra.instance().clear()
        _run_interruptibly(main)
    if multirun:
        # Every table under the sweeps root is re-rendered (cheap), so the reproduced-vs-reported
        # figure covers all claims measured so far, not only this table's.
        for sweeps_root, scale, report_dir in sorted({(str(Path(job["sweep_dir"]).parent), job["experiment"]["scale"],
                                                       job["report_dir"]) for job in jobs}):
            subprocess.run([sys.executable, "-m", "analysis", "report", sweeps_root, "--scale", scale,
                            "--out", report_dir], check=False)
    unfinished = _unfinished(jobs)
    if unfinished:
        print(f"xsample: {len(unfinished)} run(s) did not complete:", *unfinished, sep="\n", file=sys.stderr, flush=True)
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
