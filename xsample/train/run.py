"""One run from a resolved config: train (resuming if possible), evaluate, write result.json."""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from xsample.config import RunConfig
from xsample.io import remove_orphaned_temp_files
from xsample.rundir.checkpoint import CHECKPOINT_NAME
from xsample.rundir.preemption import RunInterrupted, interruptible
from xsample.rundir.provenance import hardware
from xsample.rundir.result import (
    PROVENANCE_KEYS,
    RESULT_NAME,
    ResultWriter,
    ResultWriterError,
    RunDirectoryConflict,
    ownership_problem,
    read_result,
)
from xsample.train.distributed import (
    DistInfo,
    FailureWatchdog,
    environment_ranks,
    init_distributed,
    leave,
    report_failure,
)


@dataclass
class Progress:
    """Where the run is, for a failure report: the last finished training step (None before training)."""
    step: int | None = None


def _join_ranks(config: RunConfig, run_dir: Path, writer: ResultWriter) -> DistInfo:
    """This rank's device and process group, with the failure watchdog running (see distributed.py)."""
    info = init_distributed(config.runtime.device, gpus_requested=config.resources.gpus_per_node,
                            timeout_s=float(config.runtime.distributed_timeout_s), rendezvous_dir=run_dir)
    writer.info = info
    if info.world_size > 1:
        info.watchdog = FailureWatchdog(info, writer.record_failure).start()
    writer.update(hardware=hardware(info.device, info.world_size))
    return info


def _train_and_evaluate(config: RunConfig, run_dir: Path, info: DistInfo, writer: ResultWriter,
                        progress: Progress) -> None:
    from xsample.train.baselines import baseline_outcome
    from xsample.train.components import build_training_setup
    from xsample.train.evaluate import evaluate_model, save_run_probe
    from xsample.train.finetune import load_initial_weights
    from xsample.train.loop import pretrain
    from xsample.train.tracking import ScalarTracker

    # Checks runtime.logger: an unknown or uninstalled logger fails before the data and the graph are built.
    tracker = ScalarTracker(config, run_dir, info, {key: writer.record[key] for key in PROVENANCE_KEYS})
    with tracker:
        setup = build_training_setup(config, info.device)
        load_initial_weights(setup.model, config, run_dir)
        writer.update(data={"dataset": config.data.name, "train_size": len(setup.train_dataset),
                            "samples_seen": 0, "samples_skipped": 0})
        if setup.compute_loss is None:
            outcome = baseline_outcome(config, setup, info.device)
            tracker.start(None)
        else:
            outcome = pretrain(
                config, run_dir, info, setup, writer.record["config_hash"], tracker, progress=progress,
                on_checkpoint=lambda step: writer.update(checkpoint_step=step), on_log=writer.log_step,
            )
        if outcome.left_for_requeue:  # a rank other than 0 of a preempted job: rank 0 requeues it
            writer.record["status"] = "interrupted"
            return
        leave(info)  # nobody waits for the evaluation below
        if not info.is_main:
            return
        writer.record["resumed_from"] = outcome.resumed_from
        writer.record["data"].update(samples_seen=outcome.samples_seen, samples_skipped=outcome.samples_skipped,
                                     **setup.views.describe())
        timing = {"train_s": round(outcome.train_seconds, 3), "images_per_s": round(outcome.images_per_s, 2),
                  "steady_images_per_s": round(outcome.steady_images_per_s, 2),
                  "data_wait_fraction": round(outcome.data_wait_fraction, 4),
                  "input_fraction": round(outcome.input_fraction, 4),
                  "graph_precompute_s": round(setup.graph_seconds, 3), "steps": outcome.steps}
        writer.update(timing=timing, loss_curve=[[s, round(v, 5)] for s, v in outcome.loss_history[:: max(1, len(outcome.loss_history) // 200)]])
        started = time.perf_counter()
        evaluation = evaluate_model(outcome.model, config, info.device)
        timing["eval_s"] = round(time.perf_counter() - started, 3)
        save_run_probe(run_dir, evaluation, writer.record["config_hash"], outcome.steps)
        writer.record["data"]["eval_images_skipped"] = sum(
            count for detail in evaluation.details.values() for count in (detail.get("images_skipped") or {}).values())
        not_available = list(config.eval.not_available)
        # X-CLR's target over the first batches this process trained (none when it resumed after the last step).
        diagnostics = setup.graph_diagnostics.summary() if setup.graph_diagnostics else None
        recorded = {"graph_diagnostics": diagnostics} if diagnostics else {}
        writer.update(metrics=evaluation.metrics | recorded, eval_details=evaluation.details,
                      evals_not_available=not_available, timing=timing,
                      final_loss=outcome.loss_history[-1][1] if outcome.loss_history else None)
        tracker.final_metrics(outcome.steps, evaluation.metrics)


def _record_failure(error: Exception, info: DistInfo, writer: ResultWriter, progress: Progress) -> None:
    """Make every rank stop and result.json say who failed where (see distributed.py): a peer's report
    when this rank only stopped because of it, else this rank's own error, reported to the peers first."""
    peer = info.watchdog.report if info.watchdog is not None else None
    if peer is None:
        line = f"{type(error).__name__}: {error}"
        report = {"rank": info.rank, "step": progress.step, "error": line,
                  "traceback": traceback.format_exc(limit=8)}
        report_failure(info, report)
    else:
        report = peer
        if dist.is_initialized():
            dist.destroy_process_group()
    if info.is_main:
        try:
            writer.record_failure(report)
        except OSError as write_error:
            raise ResultWriterError(f"{type(error).__name__}: {error}; result.json could not record it: "
                                    f"{write_error}") from error


def run_experiment(config: RunConfig | dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Run ``config`` in ``run_dir`` and return the result record (also written to result.json by rank 0).

    A directory holding another config's run is refused (RunDirectoryConflict) before anything is written.
    Everything after that is recorded in result.json, device and process-group errors included: an
    exception leaves status ``failed`` (with the failing rank and step) and is re-raised; a signal that
    stops a local run leaves ``interrupted`` and raises ``RunInterrupted`` (see xsample/rundir/preemption.py). A config
    that does not parse (xsample.config) raises RunConfigError before anything is written."""
    run_dir, config = Path(run_dir), RunConfig.of(config)
    if config.task == "pretrain":  # the evaluation specs' own language, checked before the hours of training
        from xsample.eval import validate_evaluations

        validate_evaluations(config.eval.evaluation_specs(), asdict(config.eval.probe))
    problem = ownership_problem(run_dir, config)
    if problem is not None:
        raise RunDirectoryConflict(problem)
    rank, world_size, local_rank = environment_ranks()
    previous_failure = None
    if rank == 0:
        previous_failure = (read_result(run_dir) or {}).get("failure")
        run_dir.mkdir(parents=True, exist_ok=True)
        # A process killed while writing leaves temp files; this run owns the directory now.
        orphans = [path for name in (CHECKPOINT_NAME, RESULT_NAME) for path in remove_orphaned_temp_files(run_dir, name)]
        if orphans:
            print(f"xsample: removed {len(orphans)} partial file(s) a killed run left in {run_dir}", flush=True)
    # Until the ranks have joined, this rank knows only what its environment says.
    info = DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch.device("cpu"))
    writer = ResultWriter(run_dir, config, info, previous_failure)
    writer.update()
    progress = Progress()
    try:
        with interruptible():
            info = _join_ranks(config, run_dir, writer)
            torch.manual_seed(config.seed)
            if config.task == "pretrain":
                _train_and_evaluate(config, run_dir, info, writer, progress)
            elif config.task == "graph_stats":
                from xsample.tasks.graph_stats import graph_similarity_metrics

                writer.update(metrics=graph_similarity_metrics(config))
            else:
                from xsample.tasks.compute import compute_overhead_metrics

                writer.update(metrics={"compute": compute_overhead_metrics(config, info.device)})
    except RunInterrupted as stop:
        if info.watchdog is not None:
            info.watchdog.stop()
        if dist.is_initialized():  # a rank stopped alone releases the peers waiting for it
            dist.destroy_process_group()
        try:
            writer.update(status="interrupted", error=str(stop))
        except OSError as write_error:
            raise ResultWriterError(f"{stop}; result.json could not record it: {write_error}") from None
        raise
    except Exception as error:
        _record_failure(error, info, writer, progress)
        raise
    if writer.record["status"] == "running":
        writer.update(status="completed")
    return writer.record
