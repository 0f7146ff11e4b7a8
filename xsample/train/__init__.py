"""One run's work: ``run.run_experiment`` joins the ranks, trains (the step loop and what builds it: components,
optim, sampling, distributed, ...) or runs another task (xsample/tasks/), evaluates and records result.json."""
