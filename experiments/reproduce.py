"""Reproduce a table or figure of the X-CLR paper.

    python experiments/reproduce.py -m table=2                  # whole sweep (SLURM if available)
    python experiments/reproduce.py -m table=1 scale=tiny       # miniature, CPU, embedded data
    python experiments/reproduce.py -m table=1 scale=tiny extra_sweeps=true   # and the rows its checks compare
    python experiments/reproduce.py -m table=3 plan=true        # jobs, states, resources, GPU-hours; run nothing
    python experiments/reproduce.py -m table=3 detach=true      # submit the SLURM arrays and return

The sweep is planned once, here: every job is composed, checked (values, dataset roots, text encoders) and
saved as its run's config.json before anything runs or is submitted, and each job executes exactly that
file. Runs already completed with their config are not launched again. When the runs have ended, the
table's report is regenerated (analysis/) and the command ends with where it is and whether its
known-answer checks pass. Hydra's own flags (--help, --cfg, --info, --resolve, --package) print and exit.
Under ``torchrun --nproc_per_node N`` a single run (no -m) trains as N ranks; rank 0 plans and reports. A
signal that stops a local run ends the command with one line (result.json says interrupted; the same
command resumes) and status 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO))

from experiments.launch import (  # noqa: E402
    Launch,
    SubmissionRefused,
    interrupted_exit_code,
    run_in_process,
    run_side_by_side,
    slurm_available,
    stderr,
    submit_phase,
    usable_cores,
    wait_for,
)
from experiments.plan import (  # noqa: E402
    LAUNCHERS,
    TABLES,
    PlannedRun,
    SavedPlan,
    SweepPlan,
    added_key_problems,
    option,
    override_key,
    plan_sweep,
    quote_table_ids,
)
from experiments.run_config import ConfigError  # noqa: E402
from xsample.rundir.preemption import Preempted, RunInterrupted  # noqa: E402
from xsample.rundir.provenance import config_hash  # noqa: E402
from xsample.rundir.result import RESULT_NAME, ownership_problem, read_result  # noqa: E402
from xsample.rundir.reuse import TwinGone  # noqa: E402

MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra's flags that print and exit: handed to Hydra itself (experiments/show_config.py).
HYDRA_PRINT_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--package", "-p",
                     "--version", "--shell-completion", "-sc")
FLAGS_WITH_VALUES = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                     "-cd", "--experimental-rerun")
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
SHOW_CONFIG = REPO / "experiments" / "show_config.py"


class Refused(SystemExit):
    """Problems found before anything ran: each printed as one line, then exit status 1."""

    def __init__(self, problems: list[str], what: str = "nothing was run"):
        for problem in problems:
            stderr(f"xsample: {problem}")
        super().__init__(f"xsample: {len(problems)} problem(s) above; {what}" if len(problems) > 1 else 1)


def _log(line: str) -> None:
    print(line, flush=True)


def _torchrun_rank() -> int | None:
    """This process's rank when torchrun started it (it sets TORCHELASTIC_RUN_ID), else None."""
    return int(os.environ.get("RANK", "0")) if "TORCHELASTIC_RUN_ID" in os.environ else None


def _check_names(overrides: list[str]) -> None:
    """Clear errors for the choices users mistype most, before Hydra's longer messages."""
    table = option(overrides, "table")
    if table is not None and "," in table:
        raise Refused(["sweep one table per command (each table owns its own grid), e.g. -m table=1"])
    if table is not None and table.strip("'\"") not in TABLES:
        raise Refused([f"unknown table {table.strip(chr(39) + chr(34))}; choose one of: {', '.join(TABLES)} (configs/table/)"])
    launcher = option(overrides, "launcher")
    if launcher is not None and launcher not in LAUNCHERS:
        raise Refused([f"unknown launcher {launcher!r}; choose one of: {', '.join(LAUNCHERS)}"])
    if option(overrides, "hydra.sweep.dir") is not None:
        raise Refused(["hydra.sweep.dir is not used: runs live in <paths.sweeps>/table<id>_<scale>/; move them with "
                       "paths.sweeps=DIR (or XSAMPLE_SWEEPS=DIR)"])
    problems = added_key_problems(overrides)
    if problems:
        raise Refused(problems)


def _launcher(overrides: list[str], plan_only: bool) -> tuple[str, str]:
    """(the launcher the runs go to, why). Without ``launcher=`` SLURM is used where it answers; the SLURM
    settings of hydra.launcher.* then apply whether the launcher was typed or found."""
    chosen = option(overrides, "launcher")
    if chosen not in (None, "plan"):
        return chosen, "chosen"
    if _torchrun_rank() is not None:
        return "local", "under torchrun: this process is one rank of the run"
    available, reason = slurm_available()
    if available:
        return "slurm", f"auto: {reason}"
    slurm_settings = [o for o in overrides if override_key(o).startswith("hydra.launcher.")]
    if slurm_settings and plan_only:
        return "slurm", f"auto: {reason}; planned for SLURM, whose settings the command line gives"
    if slurm_settings:
        raise Refused([f"{slurm_settings[0]} is a SLURM setting, but no SLURM answers here ({reason}); run on the "
                       "login node, or add plan=true to see the plan"])
    return "local", f"auto: {reason}"


def _check_runs_in_flight(overrides: list[str], launcher: str, why: str, rank: int | None) -> None:
    """runs_in_flight=N: a whole number from 1 to this machine's cores, for the local launcher outside torchrun."""
    value = option(overrides, "runs_in_flight")
    if value is None:
        return
    if launcher != "local":
        raise Refused([f"runs_in_flight is a setting of launcher=local (this command launches {launcher}: {why}); "
                       "drop it, or add launcher=local"])
    if rank is not None and value != "1":
        raise Refused(["runs_in_flight under torchrun: its processes are the ranks of one run; drop runs_in_flight"])
    cores = usable_cores()
    if not value.isdigit() or not 1 <= int(value) <= cores:
        raise Refused([f"runs_in_flight={value} must be a whole number from 1 to {cores} (the cores this process may "
                       f"use); e.g. runs_in_flight={max(1, cores // 2)}"])


def _composed_overrides(overrides: list[str], launcher: str, plan_only: bool) -> list[str]:
    """The overrides the plan composes: the launcher first (so `--cfg`-style positional values and the user's
    own hydra.launcher.* keys keep their meaning), then the user's, with launcher=plan read as plan=true."""
    mine = [o for o in overrides if override_key(o) != "launcher"]
    return [f"launcher={launcher}", *mine, *(["plan=true"] if plan_only and option(overrides, "plan") is None else [])]


def _show_with_hydra(argv: list[str]) -> None:
    """Hand a --help/--cfg/--info command line to Hydra (it prints and exits; nothing is checked or written).

    Hydra's parser takes its flags, then the overrides in one group: the child's command line is built
    in that order, with table ids quoted and the launcher this command would use first among the overrides
    (so that hydra.launcher.* settings compose whether the launcher was typed or found)."""
    flags, overrides, tokens = [], [], iter(argv)
    for token in tokens:
        if token in MULTIRUN_FLAGS:  # Hydra allows no -m beside these flags; they show the command line's config
            continue
        if token.startswith("-"):
            flags.append(token)
            if token in FLAGS_WITH_VALUES or token in ("--info", "-i"):
                value = next(tokens, None)
                if value is not None and "=" not in value and (token not in ("--info", "-i") or value in INFO_TOPICS):
                    flags.append(value)
                else:
                    if token in ("--info", "-i"):  # its topic is optional: say Hydra's default, or it takes an override
                        flags.append("all")
                    if value is not None:
                        overrides.append(value)
        else:
            overrides.append(token)
    overrides = quote_table_ids(overrides)
    launcher = [] if option(overrides, "launcher") is not None else [f"launcher={_launcher(overrides, plan_only=True)[0]}"]
    os.execv(sys.executable, [sys.executable, str(SHOW_CONFIG), *flags, *launcher, *overrides])


def format_plan(plan: SweepPlan) -> str:
    """One line per run: state, resources of its job, estimated GPU-hours and requeues; totals."""
    width = max([len(run.name) for run in plan.runs] + [3])
    lines = [f"{'run':<{width}} {'state':<9} {'nodes':>5} {'gpus':>5} {'cpus':>5} {'mem_gb':>6} {'time_min':>8} "
             f"{'gpu_h':>7} {'requeues':>8}"]
    total = 0.0
    for run in plan.runs:
        res = run.resources
        total += res["est_gpu_hours"]
        lines.append(f"{run.name:<{width}} {run.state.name:<9} {res['nodes']:>5} {res['nodes'] * res['gpus_per_node']:>5} "
                     f"{res['cpus_per_task'] * res['tasks_per_node']:>5} {res['mem_gb']:>6} {res['timeout_min']:>8} "
                     f"{res['est_gpu_hours']:>7.1f} {res['requeues']:>8}")
    settings = {key: value for key, value in plan.runs[0].launcher.items()
                if key in ("partition", "account", "qos", "constraint", "gres") and value} if plan.runs else {}
    lines.append(f"{len(plan.runs)} runs, estimated total {total:.1f} GPU-hours (rough harness estimate: training = "
                 "configs/datasets/*.yaml gpu_hours_per_epoch x epochs x data fraction, evaluation = "
                 "configs/eval_suite/*.yaml gpu_hours; requeues = job time limits the estimate spans, minus one)")
    if settings:
        lines.append("SLURM settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()))
    lines.append(_state_counts(plan))
    return "\n".join(lines)


def _state_counts(plan: SweepPlan) -> str:
    counts = {name: len(plan.by_state(name)) for name in ("new", "resume", "rerun", "reused", "completed", "running",
                                                          "queued", "refused")}
    shown = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    return f"xsample: {len(plan.runs)} run(s): {shown}; {len(plan.to_launch)} to launch"


def _report_state_details(plan: SweepPlan) -> None:
    for run in plan.by_state("refused", "running", "queued", "reused"):
        stderr(f"  {run.name}: {run.state.name}: {run.state.why}")


def _unfinished(runs: list[PlannedRun]) -> list[str]:
    """One line per run that did not end completed with its own config, read from the result.json files
    (so it works whichever launcher ran the jobs, and wherever)."""
    lines = []
    for run in runs:
        result = read_result(run.run_dir)
        if result is None:
            why = "no readable result.json: the job did not start, was cancelled, or died before writing it"
        elif result.get("config_hash") != config_hash(run.config):
            why = f"refused: {ownership_problem(run.run_dir, run.run_config)}"
        elif result.get("status") != "completed":
            error = str(result.get("error") or "no error recorded").splitlines()[0]
            why = f"{result.get('status')}: {error}"
        else:
            continue
        lines.append(f"  {run.name}: {why} ({run.run_dir / RESULT_NAME})")
    return lines


def _report(plan: SweepPlan) -> None:
    """Render this command's tables, and the comparison figure from every table under the sweeps roots (so
    it covers every claim measured so far), then say where this command's tables are and how their
    known-answer checks came out."""
    from analysis.report import check_outcome_lines, write_report

    targets = sorted({(run.sweep_dir.parent, run.config["experiment"]["scale"], run.report_dir) for run in plan.runs})
    tables = sorted({str(run.config["experiment"]["table"]) for run in plan.runs})
    for sweeps_root, scale, report_dir in targets:
        write_report(sweeps_root, report_dir, scale=scale, tables=tables)
    for sweep_dir in plan.sweep_dirs:
        first = next(run for run in plan.runs if run.sweep_dir == sweep_dir)
        labels = first.config["experiment"]
        for line in check_outcome_lines(sweep_dir, labels["table"], labels["scale"], first.report_dir):
            _log(f"xsample: {line}")


def _launch(plan: SweepPlan, launcher: str, detach: bool) -> None:
    """Run every run the plan launches in this process, or submit them (a fine-tuning run's array after its
    base runs'); attached, return once every job has ended."""
    if launcher == "local":
        runs_in_flight = int(plan.runs[0].composed["runs_in_flight"]) if plan.runs else 1
        if runs_in_flight > 1:  # even a lone run: its thread count must not depend on how many were left
            run_side_by_side(plan.to_launch, runs_in_flight)
        else:
            run_in_process(plan.to_launch)
        return
    saved_jobs: dict[str, str] = {}
    launches: list[Launch] = []
    for number, phase in enumerate(plan.phases(), start=1):
        if number > 1 and launcher != "slurm":  # only SLURM can hold the second array until the first has ended
            wait_for(launches[-1])
        dependency = ":".join(launches[-1].array_ids) if number > 1 and launcher == "slurm" else None
        try:
            launch = submit_phase(phase, launcher, dependency)
        except SubmissionRefused as error:
            error.submitted_arrays = [array for earlier in launches for array in earlier.array_ids]
            raise
        launches.append(launch)
        saved_jobs.update({name: str(job.job_id) for name, job in launch.jobs.items()})
        after = f" (starts after array {dependency} has ended)" if dependency else ""
        _log(f"xsample: submitted {len(phase)} run(s) as job array {', '.join(launch.array_ids)}{after}")
    SavedPlan(plan).write_sweep_plans(saved_jobs)
    if not detach:
        for launch in launches:
            wait_for(launch)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg.split("=", 1)[0] in HYDRA_PRINT_FLAGS for arg in argv):
        _show_with_hydra(argv)
    flags = [arg for arg in argv if arg.startswith("-") and arg not in MULTIRUN_FLAGS]
    strays = [arg for arg in argv if not arg.startswith("-") and "=" not in arg and not arg.startswith("~")]
    if flags or strays:
        raise Refused([f"unknown argument(s) {' '.join(flags + strays)}; give overrides as key=value, "
                       "-m for the table's sweep, or --help"])
    overrides = quote_table_ids([arg for arg in argv if arg not in MULTIRUN_FLAGS])
    multirun = any(arg in MULTIRUN_FLAGS for arg in argv)
    _check_names(overrides)
    plan_only = option(overrides, "launcher") == "plan" or str(option(overrides, "plan")).lower() == "true"
    rank = _torchrun_rank()
    if not multirun and str(option(overrides, "extra_sweeps")).lower() == "true":
        raise Refused(["extra_sweeps=true adds the table's extra sweeps to its sweep: add -m"])
    if rank is not None and multirun:
        raise Refused(["torchrun runs one run as several ranks: drop -m (sweeps go to SLURM, one DDP job per run)"])
    if rank is not None and option(overrides, "launcher") not in (None, "local"):
        raise Refused([f"launcher={option(overrides, 'launcher')} under torchrun: the ranks of the run are the "
                       "processes torchrun started; drop launcher= (or use launcher=local)"])
    launcher, why = _launcher(overrides, plan_only)
    _check_runs_in_flight(overrides, launcher, why, rank)
    detach = str(option(overrides, "detach")).lower() == "true"
    if detach and launcher != "slurm" and not plan_only:
        raise Refused([f"detach=true needs the SLURM launcher (this command launches {launcher}: {why})"])
    force = str(option(overrides, "force")).lower() == "true"
    speak = rank in (None, 0)
    try:
        plan = plan_sweep(_composed_overrides(overrides, launcher, plan_only), multirun=multirun, force=force)
    except ConfigError as error:
        raise Refused([str(error)]) from None
    if speak:
        sweeps = ", ".join(str(directory) for directory in plan.sweep_dirs)
        _log(f"xsample: launcher={'plan' if plan_only else launcher} ({why}); sweep dir: {sweeps}; "
             f"{len(plan.runs)} job(s)")
    if plan_only:
        print(format_plan(plan), flush=True)
        _report_state_details(plan)
        if plan.problems:
            raise Refused(plan.problems)
        return 0
    if plan.problems:
        raise Refused(plan.problems)
    if speak:
        _log(_state_counts(plan))
        _report_state_details(plan)
    if rank not in (None, 0):  # another rank of a torchrun run: rank 0 saves and reports
        # Rank 0 may have started the run while this rank planned (its result.json then reads running): join
        # every run that is not done; one rank 0 does not launch ends this rank at the collective timeout.
        joined = [run for run in plan.runs if run.state.name not in ("completed", "refused", "reused")]
        try:
            if joined:
                run_in_process(joined)
        except RunInterrupted as error:  # rank 0 says so
            return interrupted_exit_code(error)
        return 0
    saved = SavedPlan(plan)
    try:
        saved.write()
    except OSError as error:
        raise Refused([f"{error}; make the sweep directory writable or set paths.sweeps=DIR"]) from None
    except TwinGone as error:
        raise Refused([str(error)]) from None
    try:
        _launch(plan, launcher, detach)
    except SubmissionRefused as error:
        if error.submitted_arrays:  # the base runs' array is queued: its runs keep their config.json
            raise Refused([f"the scheduler refused the fine-tuning job array: {error}; array(s) "
                           f"{', '.join(error.submitted_arrays)} of the base runs were submitted; launch the same "
                           "command again once the cause is fixed"]) from None
        saved.take_back()
        raise Refused([f"the scheduler refused the job array: {error}"], "nothing was submitted") from None
    except (KeyboardInterrupt, Preempted) as error:
        if isinstance(error, RunInterrupted):  # the run says where it stopped and how to resume
            stderr(f"xsample: interrupted: {error}")
        else:
            stderr(f"xsample: stopped ({type(error).__name__}); every run keeps its checkpoint and resumes when the "
                   "same command is launched again")
        _summarise(plan)
        return interrupted_exit_code(error)
    if detach:
        report = ", ".join(f"python -m analysis report {directory} --out {plan.runs[0].report_dir}"
                           for directory in plan.sweep_dirs)
        _log(f"xsample: detached. Progress: python -m analysis status {plan.sweep_dirs[0]}; the report once the "
             f"arrays have ended: {report} (or launch this command again)")
        return 0
    _report(plan)
    return _summarise(plan)


def _summarise(plan: SweepPlan) -> int:
    unfinished = _unfinished(plan.runs)
    if unfinished:
        stderr(f"xsample: {len(unfinished)} run(s) did not complete:")
        for line in unfinished:
            stderr(line)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
