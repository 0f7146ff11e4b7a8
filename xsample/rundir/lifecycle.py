"""A run directory's lifecycle: it belongs to one config, which it skips, resumes, reruns or refuses.

- Completed with the same config: skipped (``force=True`` discards it and trains again).
- Running or failed with the same config: resumed from its checkpoint (``force=True``: from scratch).
- Holding another config's run (or a run whose config cannot be read): refused before anything in
  the directory is written, with the differing keys; ``force`` never discards another config's run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsample.config import RunConfig, RunConfigError
from xsample.locks import exclusive_lock
from xsample.rundir.checkpoint import CHECKPOINT_NAME
from xsample.rundir.heartbeat import process_gone, staleness
from xsample.rundir.result import RESULT_NAME, ownership_problem, read_result
from xsample.train.distributed import environment_rank
from xsample.train.run import run_experiment


@dataclass(frozen=True)
class RunState:
    """What a run directory holds for a config, as a planner sees it before launching: ``new`` (nothing
    yet), ``resume`` (a checkpoint or an unfinished result of this config), ``completed`` (done with this
    config: nothing to launch), ``rerun`` (completed, but force=true discards it), ``refused`` (another
    config's run, left untouched), ``running`` (a live process of this config reports from it),
    ``queued`` (an earlier launch's job holds it), or ``reused`` (new, but another table's completed run
    trains exactly the same: the planner adopts it, xsample/rundir/reuse.py)."""

    name: str
    why: str | None = None


def run_state(run_dir: Path | str, config: RunConfig, *, force: bool = False) -> RunState:
    """The state of ``run_dir`` for ``config``; ``force`` turns a completed run of it into one to rerun."""
    run_dir = Path(run_dir)
    problem = ownership_problem(run_dir, config)
    if problem is not None:
        return RunState("refused", problem)
    result = read_result(run_dir)
    status = (result or {}).get("status")
    if status == "completed":
        return RunState("rerun", "force=true: its completed result is discarded") if force else RunState("completed")
    heartbeat = (result or {}).get("heartbeat")
    if status == "running" and isinstance(heartbeat, dict):
        gone, why = process_gone(heartbeat)
        # Another host's process cannot be asked: a heartbeat that stopped long enough ago tells instead.
        if gone is False or (gone is None and staleness(heartbeat) is None):
            return RunState("running", why)
    if status is not None or (run_dir / CHECKPOINT_NAME).exists():
        return RunState("resume", f"{status or 'checkpoint'}" + (f" at step {result.get('checkpoint_step')}"
                                                                 if (result or {}).get("checkpoint_step") else ""))
    return RunState("new")


@dataclass(frozen=True)
class RunOutcome:
    status: str              # completed | failed | refused | interrupted (ranks other than 0 of a requeued job)
    run_dir: Path
    error: str | None = None
    skipped: bool = False    # completed earlier with the same config; nothing ran

    @property
    def result_path(self) -> Path:
        return self.run_dir / RESULT_NAME


def _heartbeat_holder(run_dir: Path) -> str | None:
    """The host and PID the run's result.json heartbeat names (the lock holder on another host)."""
    heartbeat = (read_result(run_dir) or {}).get("heartbeat")
    if isinstance(heartbeat, dict) and heartbeat.get("pid") is not None:
        return f"PID {heartbeat['pid']} on {heartbeat.get('host')} (per its result.json)"
    return None


@contextmanager
def run_lock(run_dir: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Serialise jobs that share a run (a fine-tune job training its missing base run while the base row's
    own job runs, or the same command twice); a waiting job says which process holds the run.
    The lock is held on the directory itself, so taking it writes nothing inside.
    Only global rank 0 locks: the other ranks wait for it in collectives."""
    if environment_rank() != 0:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(run_dir, what="run", announce=log, holder=lambda: _heartbeat_holder(run_dir)):
        yield


def execute_run(config: RunConfig | dict[str, Any], run_dir: Path | str, *, force: bool = False,
                log: Callable[[str], None] = print) -> RunOutcome:
    """Run ``config`` (a run config, or the mapping of a planned config.json, parsed here once) in its own
    directory ``run_dir`` as the module docstring describes. A config that does not parse is refused before
    anything in the directory is written.

    Failures are recorded in result.json and returned, not raised, so a sweep goes on with its other runs.
    A signal that stops a local run raises ``RunInterrupted`` (xsample/rundir/preemption.py; a
    KeyboardInterrupt, so a sweep stops too): its ``str()`` is the one line to show, ``signum`` the signal,
    result.json says ``interrupted``, and the same call resumes from the checkpoint. Under a scheduler, rank 0 raises ``Preempted`` after handing
    the job to the scheduler's requeue, and the other ranks return an ``interrupted`` outcome."""
    run_dir = Path(run_dir)
    try:
        config = RunConfig.of(config)
    except RunConfigError as error:
        log(f"xsample: {run_dir.name}: refused: {error}")
        return RunOutcome("refused", run_dir, error=str(error))
    try:
        return _execute_locked(config, run_dir, force, log)
    except OSError as error:  # the directory cannot be created, locked or cleared: this run fails, not the sweep
        line = f"cannot write its run directory {run_dir}: {error}"
        log(f"xsample: {run_dir.name} failed: {line} (result.json could not record it)")
        return RunOutcome("failed", run_dir, error=line)


def _execute_locked(config: RunConfig, run_dir: Path, force: bool, log: Callable[[str], None]) -> RunOutcome:
    name = run_dir.name
    with run_lock(run_dir, log):
        problem = ownership_problem(run_dir, config)
        if problem is not None:
            log(f"xsample: {name}: refused: {problem}")
            return RunOutcome("refused", run_dir, error=problem)
        previous = read_result(run_dir)
        if previous is not None and previous.get("status") == "completed" and not force:
            log(f"xsample: {name}: already completed with the same config hash, skipped")
            return RunOutcome("completed", run_dir, skipped=True)
        if force and environment_rank() == 0 and run_dir.is_dir() and any(run_dir.iterdir()):
            log(f"xsample: {name}: force=true, discarding the previous run of this config in {run_dir}")
            shutil.rmtree(run_dir)
        try:
            record = run_experiment(config, run_dir)
        except Exception as error:  # recorded in result.json by run_experiment when it can write there
            result = read_result(run_dir) or {}
            recorded = result.get("status") == "failed" and (result.get("heartbeat") or {}).get("pid") == os.getpid()
            # The recorded error names the root cause (another rank's failure, where this rank only stopped).
            line = str(result["error"] if recorded else f"{type(error).__name__}: {error}").splitlines()[0]
            where = f"see {run_dir / RESULT_NAME}" if recorded else "result.json could not record it"
            if environment_rank() == 0:
                log(f"xsample: {name} failed: {line} ({where})")
            return RunOutcome("failed", run_dir, error=line)
    return RunOutcome(record["status"], run_dir)
