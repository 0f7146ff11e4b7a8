"""Runs with several ranks: devices, rendezvous, the evaluation nobody waits for, one rank's failure ending
all of them, and signals (xsample/train/distributed.py, xsample/rundir/preemption.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.distributed_children import slurm_task
from tests.engine_helpers import REPO, small_run_config
from xsample.io import atomic_write_json
from xsample.rundir.preemption import Preempted, PreemptionGuard, RunInterrupted
from xsample.rundir.provenance import config_hash
from xsample.train.distributed import DeviceError, resolve_device
from xsample.train.run import run_experiment

TINY = ["table=2", "row=augmentation", "scale.epochs=1", "scale.batch_size=128",
        "datasets.fashion_mnist.tiny.options.max_samples=512", "launcher=local"]


# ---- devices -------------------------------------------------------------------------------------------
def test_device_choices_are_strict_and_a_gpu_request_never_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for wrong in ("tpu", "gpu", "cuda:x", "CPU"):
        with pytest.raises(ValueError, match=rf"runtime.device='{wrong}' is not a choice; use one of auto, cpu, cuda, cuda:N"):
            resolve_device(wrong, 0, 1, 0)
    assert resolve_device("auto", 0, 1, 0) == torch.device("cpu")
    assert resolve_device("cpu", 0, 1, 8) == torch.device("cpu"), "the CPU on purpose"
    with pytest.raises(DeviceError, match=r"ask for 8 GPU\(s\) per node .* but no CUDA device is visible"):
        resolve_device("auto", 0, 1, 8)
    with pytest.raises(DeviceError, match=r"runtime.device=cuda:0 but no CUDA device"):
        resolve_device("cuda:0", 0, 1, 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda", 3, 4, 4) == torch.device("cuda", 0), "SLURM bound one GPU to this task"
    with pytest.raises(ValueError, match="names one GPU, but this run has 2 ranks"):
        resolve_device("cuda:0", 0, 2, 2)
    with pytest.raises(DeviceError, match=r"sees 1 GPU\(s\)"):
        resolve_device("cuda:1", 0, 1, 1)


def test_resources_and_the_distributed_timeout_are_placement_not_identity(tmp_path):
    config = small_run_config("table='2'", "row=augmentation", cache_dir=tmp_path / "cache")
    moved = small_run_config("table='2'", "row=augmentation", "scale.resources.tasks_per_node=2",
                             "runtime.distributed_timeout_s=60", cache_dir=tmp_path / "cache")
    assert config["resources"] != moved["resources"] and config_hash(config) == config_hash(moved)


def test_a_gpu_resourced_run_without_cuda_fails_at_once_naming_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = small_run_config("table='2'", "row=augmentation", "scale.resources.gpus_per_node=8",
                              cache_dir=tmp_path / "cache")
    started = time.monotonic()
    with pytest.raises(DeviceError):
        run_experiment(config, tmp_path / "run")
    assert time.monotonic() - started < 20, "refused before any data is built"
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "failed" and "no CUDA device is visible" in record["error"]
    assert record["failure"] == {"rank": 0, "step": None, "repeats": 1}
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ---- rendezvous and failures between two processes ------------------------------------------------------
def test_slurm_ranks_meet_on_a_port_the_system_chose_and_one_ranks_failure_releases_the_other(tmp_path):
    """Two SLURM-like tasks (no MASTER_ADDR/PORT): rank 0 announces the store in the run directory, ignoring
    the address the previous attempt left there; then rank 1 reports a failure while rank 0 is blocked."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    atomic_write_json(run_dir / ".rendezvous-4242-0-0.json", {"host": "127.0.0.1", "port": 1})  # the last attempt's
    mp.spawn(slurm_task, args=(str(run_dir), str(tmp_path)), nprocs=2, join=True)
    assert not list(run_dir.glob(".rendezvous-*")), "rank 0 cleans the announcements up"
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    assert rank0["sum"] == rank1["sum"] == 3.0
    assert rank0["stop_at"] == rank1["stop_at"] in (7, 8), "one stop step for both, two steps after the proposal"
    assert rank0["raised"] and rank0["seconds"] < 10
    assert rank0["recorded"] == [{"rank": 1, "step": 7, "error": "RuntimeError: boom"}] == [rank0["report"]]


# ---- signals ---------------------------------------------------------------------------------------------
def test_a_scheduled_job_hands_over_on_rank_0_only_and_a_local_run_stops_as_interrupted():
    handed: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))
    try:
        for is_main in (False, True):
            with PreemptionGuard() as guard:
                os.kill(os.getpid(), signal.SIGUSR2)
                assert guard.requested
                if is_main:
                    with pytest.raises(Preempted):
                        guard.hand_over(is_main, 12)
                else:
                    guard.hand_over(is_main, 12)  # returns: rank 0 requeues the job
        assert handed == [signal.SIGUSR2], "only rank 0 called the scheduler's handler"
    finally:
        signal.signal(signal.SIGUSR2, previous)
    with PreemptionGuard() as guard:  # no scheduler: SIGTERM's handler is the default one
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(RunInterrupted, match="stopped by SIGTERM; checkpoint saved at step 12; run the same"):
            guard.hand_over(True, 12)


# ---- two ranks through torchrun -------------------------------------------------------------------------
def _torchrun(script: str, sweeps: Path, *overrides: str, env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script,
               *TINY, f"paths.sweeps={sweeps}", f"paths.cache={sweeps / 'cache'}",
               f"paths.figures={sweeps / 'figures'}", *overrides]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})})


def _result(sweeps: Path) -> dict | None:
    found = list(sweeps.glob("table2_tiny/runs/*/result.json"))
    return json.loads(found[0].read_text()) if found else None


@pytest.mark.slow
def test_two_ranks_outlive_a_collective_timeout_shorter_than_rank_0s_evaluation(tmp_path):
    """Rank 1 leaves once training is over; with every wait bounded by 10 s, an evaluation of more than
    10 s on rank 0 (made to last 11 s on any machine) would otherwise kill it (the old barrier after evaluation)."""
    process = _torchrun("tests/rank_fault.py", tmp_path, "runtime.distributed_timeout_s=10", "scale.probe.epochs=5",
                        env={"XSAMPLE_EVAL_AT_LEAST_S": "11"})
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    record = _result(tmp_path)
    assert record["status"] == "completed" and record["hardware"]["world_size"] == 2
    assert record["timing"]["eval_s"] > 10, "the evaluation outlasted the collective timeout"


@pytest.mark.slow
@pytest.mark.rehearsal  # two torchrun launches (~2 min on 2 busy cores): make test-long; make test has the
# two-process test of the same mechanism above
def test_an_exception_on_rank_1_ends_both_ranks_fast_and_its_relaunch_does_not_loop(tmp_path):
    fault = {"XSAMPLE_FAULT_RANK": "1", "XSAMPLE_FAULT_STEP": "2"}
    for attempt in (1, 2):
        process = _torchrun("tests/rank_fault.py", tmp_path, "scale.checkpoint_every_steps=1",
                            "runtime.distributed_timeout_s=300", env=fault)
        deadline, failed_at = time.monotonic() + 300, None
        while process.poll() is None and time.monotonic() < deadline:
            record = _result(tmp_path)  # this attempt's failure, not the previous one's result.json
            if failed_at is None and record is not None and (record.get("failure") or {}).get("repeats") == attempt:
                failed_at = time.monotonic()
            time.sleep(0.2)
        ended_at = time.monotonic()
        output = process.communicate(timeout=60)[0]
        record = _result(tmp_path)
        assert process.returncode != 0 and record["status"] == "failed", output[-3000:]
        assert failed_at is not None and ended_at - failed_at < 30, "every rank ended soon after the failure"
        assert record["failure"] == {"rank": 1, "step": 2, "repeats": attempt}
        assert record["error"].startswith("rank 1: RuntimeError: injected fault on rank 1 at step 2")
        if attempt == 2:
            assert "resumed from step 1" in output
            assert "attempt 2 to fail at step 2: the failure is deterministic" in record["error"]
