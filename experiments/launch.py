"""Launching planned runs: one after another in this process, several side by side in child processes
(``runs_in_flight``), or as submitit job arrays (SLURM, or local processes with a time limit). Every job
executes its run's saved config.json and nothing else.

A fine-tuning run waits for its base run: on SLURM its array is submitted with a dependency on the base
rows' array (``afterany``: the fine-tuning job then finds a failed base and says so in its result.json);
elsewhere the second phase starts once the first has ended.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from experiments.plan import PlannedRun
from xsample.io import read_json
from xsample.methods import method as registered_method
from xsample.rundir.heartbeat import process_gone
from xsample.rundir.lifecycle import RunOutcome, execute_run
from xsample.rundir.preemption import Preempted, RunInterrupted
from xsample.rundir.result import CONFIG_NAME

REPO = Path(__file__).resolve().parents[1]

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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM allocation or taskset narrows it)."""
    return len(os.sched_getaffinity(0))


def threads_per_run(runs_in_flight: int) -> int:
    """Each of ``runs_in_flight`` side-by-side runs gets an equal share of the cores, fixed whatever else runs:
    a run's numbers depend on its thread count (CPU reductions are summed in another order), so a relaunch of
    the same command trains with the same count (result.json hardware.cpu_threads records it)."""
    return max(1, usable_cores() // runs_in_flight)


class SweepInterrupted(RunInterrupted):
    """A signal stopped a side-by-side launch: it was passed on to every run in flight, each of which
    recorded where it stopped in its result.json; no further run was started."""

    def __init__(self, signum: int, stopped: int):
        KeyboardInterrupt.__init__(self, f"stopped by {signal.Signals(signum).name}; passed on to the {stopped} run(s) "
                                         "in flight (each result.json says where it stopped); run the same command "
                                         "again to resume")
        self.signum, self.checkpoint_step = int(signum), None


# What a side-by-side worker prints once a run has ended (xsample/rundir keeps the run's outcome on disk).
RUN_ENDED = "xsample-worker: ended"


@dataclass
class _Worker:
    """A process that executes the runs it is handed, one after another (this module's ``__main__``)."""

    process: subprocess.Popen
    ended: queue.SimpleQueue
    run: PlannedRun | None = None      # the run it executes now
    signalled: bool = False

    def hand(self, run: PlannedRun) -> None:
        self.run = run
        self.process.stdin.write(f"{run.run_dir}\n")
        self.process.stdin.flush()

    def retire(self) -> None:
        """No more runs: it exits once its input ends."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()


def worker_command(threads: int) -> list[str]:
    """The command of a side-by-side worker: it reads run directories on stdin and executes each saved run."""
    return [sys.executable, "-m", "experiments.launch", str(threads)]


def run_side_by_side(runs: list[PlannedRun], runs_in_flight: int, log: Callable[[str], None] = _log,
                     command: Callable[[int], list[str]] = worker_command) -> None:
    """Every run, at most ``runs_in_flight`` at once, each in one of as many worker processes with
    ``threads_per_run`` threads; in the plan's order with the runs that train nothing last, and a fine-tuning
    run only once its base (when launched too) has ended. A worker executes its runs one after another, so it
    imports the library and renders the evaluation worlds once, not per run. Each output line is shown prefixed
    with its run's name.

    Ctrl-C or SIGTERM is passed on, once, to every run in flight (each checkpoints and records itself as
    interrupted, as a run in this process would), no further run starts, and ``SweepInterrupted`` is raised
    once the workers have exited. The workers run in their own session, so that a terminal's Ctrl-C reaches
    them only through this process, once."""
    threads = threads_per_run(runs_in_flight)
    # Runs that train nothing (an untrained baseline's evaluation) go last: short, they fill the cores while
    # the last trained runs end, where a trained run started last would leave the other cores idle.
    waiting = sorted(runs, key=lambda run: not registered_method(run.config["method"]["name"]).trains)
    launched_bases = {run.run_dir for run in runs}
    ended: set[Path] = set()
    workers: list[_Worker] = []
    received: list[int] = []
    stopped = 0

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    def ready() -> PlannedRun | None:
        return next((run for run in waiting if run.base is None or run.base.run_dir not in launched_bases
                     or run.base.run_dir in ended), None)

    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "PYTHONUNBUFFERED": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    previous = {signum: signal.signal(signum, record) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for worker in workers:
                while not worker.ended.empty():
                    ended.add(worker.ended.get())
                    worker.run = None
                if worker.process.poll() is not None and worker.run is not None:  # it died inside a run
                    ended.add(worker.run.run_dir)
                    worker.run = None
            workers = [worker for worker in workers if worker.process.poll() is None]
            if received:
                waiting.clear()
                for worker in workers:
                    if worker.run is not None and not worker.signalled:
                        worker.process.send_signal(received[0])
                        worker.signalled = True
                        stopped += 1
            while waiting and ready() is not None:
                idle = next((worker for worker in workers if worker.run is None), None)
                if idle is None and len(workers) < runs_in_flight:
                    idle = _start_worker(command(threads), environment, log)
                    workers.append(idle)
                if idle is None:
                    break
                run = ready()
                waiting.remove(run)
                idle.hand(run)
            if not waiting or received:
                for worker in workers:
                    if worker.run is None:
                        worker.retire()
            if not workers and (not waiting or ready() is None):
                break
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.retire()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise SweepInterrupted(received[0], stopped)


def _start_worker(command: list[str], environment: dict[str, str], log: Callable[[str], None]) -> _Worker:
    process = subprocess.Popen(command, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    worker = _Worker(process, queue.SimpleQueue())

    def relay() -> None:
        for line in process.stdout:
            if line.startswith(RUN_ENDED):
                worker.ended.put(Path(line[len(RUN_ENDED):].strip()))
            else:
                name = worker.run.name if worker.run is not None else "worker"
                log(f"{name}: {line.rstrip()}")

    threading.Thread(target=relay, daemon=True).start()
    return worker


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


def _serve_runs(threads: int) -> int:
    """A side-by-side worker (``python -m experiments.launch THREADS``): execute each run directory read on
    stdin, then say it ended; exit status as reproduce.py's when a signal stops a run."""
    import torch

    torch.set_num_threads(threads)
    try:
        for line in sys.stdin:
            try:
                SavedRunJob()(line.strip())
            except Exception as error:  # noqa: BLE001 - this run could not start (e.g. its config.json is gone): say so, go on
                _log(f"xsample: {Path(line.strip()).name} failed: {error}")
            print(f"{RUN_ENDED} {line.strip()}", flush=True)
    except RunInterrupted as error:
        _log(f"xsample: interrupted: {error}")
        return interrupted_exit_code(error)
    except KeyboardInterrupt:  # between runs: nothing of a run was under way
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_serve_runs(int(sys.argv[1])))
