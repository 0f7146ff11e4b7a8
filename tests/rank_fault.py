"""experiments/reproduce.py with one rank failing: a torchrun entry for the rank-failure tests.

    XSAMPLE_FAULT_RANK=1 XSAMPLE_FAULT_STEP=3 torchrun --standalone --nproc_per_node 2 tests/rank_fault.py ARGS

Rank XSAMPLE_FAULT_RANK raises RuntimeError once training reaches step XSAMPLE_FAULT_STEP (after that step,
before the next): the same step in every launch, as a deterministic fault would be.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xsample.train import run  # noqa: E402
from xsample.train.distributed import environment_rank  # noqa: E402


class FailingProgress(run.Progress):
    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        rank = environment_rank()
        if (name == "step" and value == int(os.environ["XSAMPLE_FAULT_STEP"])
                and rank == int(os.environ["XSAMPLE_FAULT_RANK"])):
            raise RuntimeError(f"injected fault on rank {rank} at step {value}")


if __name__ == "__main__":
    run.Progress = FailingProgress
    script = str(REPO / "experiments" / "reproduce.py")
    sys.argv[0] = script
    runpy.run_path(script, run_name="__main__")  # as a script: Hydra finds configs/ relative to it
