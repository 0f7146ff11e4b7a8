"""Stop at a step boundary on SIGTERM / SIGUSR2, checkpoint, then let the scheduler's handler act.

SLURM sends SIGUSR2 before a time limit (submitit's signal_delay_s) and SIGTERM on scancel,
preemption or `scontrol requeue`. The handler only records the signal; the training loop saves a
checkpoint at the next step boundary and then calls whatever handler was installed before ours
(submitit's, which requeues the job), so no state is lost between the last periodic checkpoint
and the signal.
"""

from __future__ import annotations

import signal
from types import FrameType


class Preempted(BaseException):
    """Raised after the checkpoint is saved when no previous handler ended the process.

    A BaseException, like KeyboardInterrupt: job runners (submitit, the sweep loop) catch
    ``Exception`` to record a failed job, and a preempted job has not failed: SLURM requeues it
    (scontrol requeue, preemption) or the user stopped it, and the next start resumes."""


class PreemptionGuard:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

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

    def hand_over(self) -> None:
        """Give the recorded signal to the previous handler (e.g. submitit's requeue), then stop."""
        signum = self.received
        previous = self._previous.get(signum) if signum is not None else None
        self.__exit__()
        if callable(previous):
            previous(signum, None)
        raise Preempted(f"stopped by signal {signal.Signals(signum).name}; the checkpoint is saved")


def leave_preemption_to_the_main_process(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore the preemption signals. SLURM signals every process
    of the job; a worker killed by SIGTERM would make the training process fail with "DataLoader worker
    is killed by signal" instead of checkpointing at the next step and requeueing. Workers still exit
    when the loader shuts them down or the training process dies."""
    for signum in PreemptionGuard.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)

