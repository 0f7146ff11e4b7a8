"""One preemption-safe run: build the pieces from a resolved config, train, evaluate, record."""

from xsample.train.run import is_completed, read_result, run_experiment

__all__ = ["is_completed", "read_result", "run_experiment"]
