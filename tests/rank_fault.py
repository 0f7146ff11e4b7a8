"""experiments/reproduce.py with an injected fault: a torchrun entry for the multi-rank tests.

    XSAMPLE_FAULT_RANK=1 XSAMPLE_FAULT_STEP=3 torchrun --standalone --nproc_per_node 2 tests/rank_fault.py ARGS
    XSAMPLE_EVAL_AT_LEAST_S=11 torchrun --standalone --nproc_per_node 2 tests/rank_fault.py ARGS

Rank XSAMPLE_FAULT_RANK raises RuntimeError once training reaches step XSAMPLE_FAULT_STEP (after that step,
before the next): the same step in every launch, as a deterministic fault would be. XSAMPLE_EVAL_AT_LEAST_S
makes the evaluation last at least that many seconds, whatever the machine's speed.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xsample.train import evaluate, run  # noqa: E402
from xsample.train.distributed import environment_rank  # noqa: E402


class FailingProgress(run.Progress):
    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        rank = environment_rank()
        if (name == "step" and value == int(os.environ["XSAMPLE_FAULT_STEP"])
                and rank == int(os.environ["XSAMPLE_FAULT_RANK"])):
            raise RuntimeError(f"injected fault on rank {rank} at step {value}")


def _slowed(evaluate_model):
    def slow_evaluate_model(*args, **kwargs):
        started = time.monotonic()
        evaluation = evaluate_model(*args, **kwargs)
        time.sleep(max(0.0, float(os.environ["XSAMPLE_EVAL_AT_LEAST_S"]) - (time.monotonic() - started)))
        return evaluation
    return slow_evaluate_model


if __name__ == "__main__":
    if "XSAMPLE_FAULT_RANK" in os.environ:
        run.Progress = FailingProgress
    if "XSAMPLE_EVAL_AT_LEAST_S" in os.environ:
        evaluate.evaluate_model = _slowed(evaluate.evaluate_model)
    script = str(REPO / "experiments" / "reproduce.py")
    sys.argv[0] = script
    runpy.run_path(script, run_name="__main__")  # as a script: Hydra finds configs/ relative to it
