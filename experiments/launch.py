"""Launching planned runs: one after another in this process, or as submitit job arrays (SLURM, or local
processes with a time limit). Every job executes its run's saved config.json and nothing else.

A fine-tuning run waits for its base run: on SLURM its array is submitted with a dependency on the base
rows' array (``afterany``: the fine-tuning job then finds a failed base and says so in its result.json);
elsewhere the second phase starts once the first has ended.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.plan import PlannedRun
from xsample.io import read_json
from xsample.rundir.heartbeat import process_gone
from xsample.rundir.lifecycle import RunOutcome, execute_run
from xsample.rundir.preemption import Preempted, RunInterrupted
from xsample.rundir.result import CONFIG_NAME

# The hydra.launcher keys submitit's executors take without their executor's prefix.
SHARED_PARAMETERS = ("timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
                     "stderr_to_stdout")
# hydra.launcher keys that are not job parameters (hydra's own, or given to the executor when it is made).
NOT_JOB_PARAMETERS = ("_target_", "submitit_folder", "max_num_timeout")
POLL_SECONDS = 5.0


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


class SavedRunJob:
    """What a submitted job calls: execute the run config saved in ``run_dir``/config.json.

    submitit calls ``checkpoint`` when the job is preempted or reaches its time limit (after the run
    has saved its own checkpoint, xsample/rundir/preemption.py); the same call is then requeued, and the
    run resumes from its directory."""

    def __call__(self, run_dir: str) -> str:
        config = read_json(Path(run_dir) / CONFIG_NAME)
        if not isinstance(config, dict):
            raise FileNotFoundError(f"{Path(run_dir) / CONFIG_NAME} is missing or unreadable: the planned config of "
                                    "this job is gone; relaunch the sweep to plan it again")
        return execute_run(config, run_dir, log=_log).status

    def checkpoint(self, run_dir: str) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, run_dir)


def _log(line: str) -> None:
    print(line, flush=True)


class SubmissionRefused(RuntimeError):
    """sbatch (or the local submitit executor) refused a job array; the message is the scheduler's reason.
    ``submitted_arrays``: arrays of the same launch submitted before this one (they stay queued)."""

    submitted_arrays: tuple[str, ...] | list[str] = ()


@dataclass
class Launch:
    """A launch in progress: the submitted jobs (by run name), or nothing when runs ran in this process."""

    jobs: dict[str, Any]
    array_ids: list[str]


def run_in_process(runs: list[PlannedRun], log: Callable[[str], None] = _log) -> list[RunOutcome]:
    """Every run, one after another (a fine-tuning run after its base, by the plan's order). Ctrl-C or
    SIGTERM stops at the current run (which records itself as interrupted and resumes when relaunched)."""
    outcomes = []
    for run in runs:
        outcomes.append(execute_run(run.config, run.run_dir, log=log))
    return outcomes


def _executor(launcher_name: str, launcher: dict[str, Any], folder: Path, dependency: str | None):
    import submitit

    cluster = "slurm" if launcher_name == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster,
                                     **{f"{cluster}_max_num_timeout": int(launcher["max_num_timeout"])}
                                     if "max_num_timeout" in launcher else {})
    parameters = {key if key in SHARED_PARAMETERS else f"{cluster}_{key}": value
                  for key, value in launcher.items() if key not in NOT_JOB_PARAMETERS}
    if dependency is not None:
        extra = dict(parameters.get("slurm_additional_parameters") or {})
        extra["dependency"] = f"afterany:{dependency}"
        parameters["slurm_additional_parameters"] = extra
    executor.update_parameters(**parameters)
    return executor


def submit_phase(runs: list[PlannedRun], launcher_name: str, dependency: str | None = None) -> Launch:
    """One job array for ``runs`` (one job per run, each with that run's resources); raises SubmissionRefused
    with the scheduler's reason. Jobs with different resources go out as separate arrays."""
    jobs: dict[str, Any] = {}
    array_ids: list[str] = []
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(repr(sorted(_job_launcher(run).items())), []).append(run)
    for members in groups.values():
        launcher = _job_launcher(members[0])
        folder = Path(str(launcher["submitit_folder"]))
        executor = _executor(launcher_name, launcher, folder, dependency)
        refusal = io.StringIO()
        try:
            with contextlib.redirect_stderr(refusal):  # submitit prints sbatch's stderr, then raises it
                submitted = executor.map_array(SavedRunJob(), [str(run.run_dir) for run in members])
        except Exception as error:  # noqa: BLE001 - submitit's FailedJobError and sbatch's OSErrors alike
            reason = _scheduler_reason(str(error) or refusal.getvalue())
            raise SubmissionRefused(reason) from None
        for run, job in zip(members, submitted, strict=True):
            jobs[run.name] = job
        array_ids.append(str(submitted[0].job_id).split("_")[0])
    return Launch(jobs, array_ids)


def _job_launcher(run: PlannedRun) -> dict[str, Any]:
    """The run's hydra.launcher settings with its own resources (a baseline row needs one GPU, not a node)."""
    launcher = dict(run.launcher)
    for key in ("nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "timeout_min"):
        if key in launcher:
            launcher[key] = run.resources[key]
    return launcher


def _scheduler_reason(text: str) -> str:
    """The line of sbatch's answer that says why (its last "error:" line), without the tool's prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no reason given"])[-1].removeprefix("sbatch: ")


def _ended(job: Any) -> bool:
    """Whether a submitted job has ended: its result is written, or SLURM no longer lists it as active
    (asked through squeue, which works where job accounting (sacct) is off; a requeued job stays active)."""
    if job.paths.result_pickle.exists():
        return True
    if type(job).__name__ == "SlurmJob":
        return process_gone({"slurm_job_id": str(job.job_id)})[0] is True
    return job.done()


def wait_for(launch: Launch, log: Callable[[str], None] = _log) -> None:
    """Block until every job of the launch has ended (requeued jobs included), saying so now and then."""
    pending = dict(launch.jobs)
    announced = time.monotonic()
    while pending:
        pending = {name: job for name, job in pending.items() if not _ended(job)}
        if pending and time.monotonic() - announced > 300:
            log(f"xsample: waiting for {len(pending)} job(s) (array {', '.join(launch.array_ids)}); Ctrl-C stops "
                "waiting, not the jobs")
            announced = time.monotonic()
        if pending:
            time.sleep(POLL_SECONDS)


def interrupted_exit_code(error: BaseException) -> int:
    """128 + the signal number, as a shell reports a process stopped by that signal."""
    if isinstance(error, RunInterrupted):  # a run that stopped itself on SIGINT or SIGTERM
        return 128 + error.signum
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 143 if isinstance(error, Preempted) else 1


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
