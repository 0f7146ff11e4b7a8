"""One preemption-safe run: build the pieces from a resolved config, train, evaluate, record."""

from xsample.train.lifecycle import RunOutcome, execute_run
from xsample.train.run import RunDirectoryConflict, ownership_problem, read_result, run_experiment

__all__ = ["RunOutcome", "execute_run", "RunDirectoryConflict", "ownership_problem", "read_result", "run_experiment"]
