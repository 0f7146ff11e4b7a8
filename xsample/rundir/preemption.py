"""Stopping a run on a signal without losing work: checkpoint at an agreed step, then hand over.

SLURM sends SIGUSR2 before a time limit (submitit's signal_delay_s) and SIGTERM on scancel, preemption or
`scontrol requeue`; a user stops a local run with Ctrl-C (SIGINT) or SIGTERM. During training the
handler only records the signal; within a step or two the ranks agree on a step to stop at (see
xsample/train/loop.py), rank 0 saves a checkpoint holding every rank's state there, and all ranks pass a
barrier. Then:

- under a scheduler (a handler was installed before ours: submitit's), rank 0 alone calls it, which
  requeues the job, and raises ``Preempted``; the other ranks return quietly (exit status 0), so neither a
  failed task nor a race with rank 0's requeue can fail the job;
- otherwise (a local run, torchrun), every rank raises ``RunInterrupted``: result.json says
  ``interrupted`` and the next launch resumes from the checkpoint.

Outside the training loop (set-up, evaluation) ``interruptible`` turns SIGINT and an unhandled SIGTERM
into ``RunInterrupted`` at once: there is no step to finish, and the last checkpoint is the resume point.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Preempted(BaseException):
    """Raised on rank 0 after the checkpoint is saved and the scheduler's handler was called.

    A BaseException, like KeyboardInterrupt: job runners (submitit, the sweep loop) catch ``Exception``
    to record a failed job, and a preempted job has not failed: SLURM requeues it."""


class RunInterrupted(KeyboardInterrupt):
    """A local run stopped by a signal; ``str()`` is the one line to show, ``signum`` the signal (a shell
    reports exit status 128 + signum). result.json says ``interrupted``; launching the same run again
    resumes from its last checkpoint.

    A KeyboardInterrupt (Ctrl-C is one), so that a sweep stops instead of going on with its next run, and
    whatever handles Ctrl-C handles a SIGTERM the same way."""

    def __init__(self, signum: int, checkpoint_step: int | None):
        name = signal.Signals(signum).name
        kept = (f"checkpoint saved at step {checkpoint_step}" if checkpoint_step is not None
                else "no checkpoint yet: a relaunch starts over")
        super().__init__(f"stopped by {name}; {kept}; run the same command again to resume")
        self.signum, self.checkpoint_step = int(signum), checkpoint_step


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise RunInterrupted(signum, None)


def _scheduler_handler(handler: object) -> bool:
    """Whether ``handler`` belongs to a scheduler (submitit) rather than to Python or to us."""
    return callable(handler) and handler not in (signal.default_int_handler, _raise_interrupted)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT, and SIGTERM unless a scheduler handles it, raise ``RunInterrupted`` inside the block."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in previous.items():
        if not _scheduler_handler(handler):
            signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class PreemptionGuard:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionGuard:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    @property
    def requested(self) -> bool:
        return self.received is not None

    def hand_over(self, is_main: bool, checkpoint_step: int) -> None:
        """After the checkpoint (see the module docstring): the scheduler's handler on rank 0, else stop.
        Returns only on the ranks other than 0 of a scheduled job."""
        signum = self.received if self.received is not None else signal.SIGTERM
        previous = self._previous.get(signum)
        self.__exit__()
        if not _scheduler_handler(previous):
            raise RunInterrupted(signum, checkpoint_step)
        if is_main:
            previous(signum, None)
            raise Preempted(f"stopped by signal {signal.Signals(signum).name}; the checkpoint is saved")


def leave_preemption_to_the_main_process(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore the preemption signals. SLURM signals every process
    of the job, and Ctrl-C every process of the terminal's group; a worker killed by it would make the
    training process fail with "DataLoader worker is killed by signal" instead of checkpointing at the
    next step. Workers still exit when the loader shuts them down or the training process dies."""
    for signum in PreemptionGuard.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
