"""Smoke tests of the local SLURM cluster with submitit: a job runs, a requeued job resumes from its
checkpoint, and the time-limit signal makes a Checkpointable job requeue itself."""

import json
import subprocess
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from tests.slurm import slurm_jobs

pytestmark = pytest.mark.slurm

# The job's Python must not need to import the tests package.
cloudpickle.register_pickle_by_value(slurm_jobs)


def _executor(cluster, folder: Path, **parameters) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                     slurm_max_num_timeout=parameters.pop("max_num_timeout", 0))
    executor.update_parameters(slurm_partition=cluster.partition, cpus_per_task=1, mem_gb=1, **parameters)
    return executor


def _result(job: submitit.Job, timeout_s: float):
    """job.result() with a deadline: without accounting (no sacct) submitit cannot see a job that died
    without writing its result, and would wait forever."""
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job.job_id)], check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout_s} s; stderr:\n{job.stderr() or ''}")
        time.sleep(1)
    return job.result()


def _wait_for_count(state_path: Path, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if state_path.exists() and json.loads(state_path.read_text())["count"] >= count:
            return
        time.sleep(0.2)
    pytest.fail(f"the job did not reach count {count} in {timeout_s} s ({state_path})")


def test_submitit_job_runs(slurm_cluster, tmp_path):
    job = _executor(slurm_cluster, tmp_path, timeout_min=5).submit(slurm_jobs.describe_job_environment)
    info = _result(job, timeout_s=60)
    assert info["job_id"] == str(job.job_id)
    assert info["restart_count"] is None


@pytest.mark.slow
def test_requeued_job_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    state_path = tmp_path / "counter.json"
    total = 30
    job = _executor(slurm_cluster, tmp_path, timeout_min=5).submit(
        slurm_jobs.count_with_checkpoint, str(state_path), total, 0.5)
    _wait_for_count(state_path, 2, timeout_s=60)
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True)

    state = _result(job, timeout_s=180)
    assert state["count"] == total
    first, resumed = state["starts"]
    assert first == {"count": 0, "restart_count": None}
    # The requeued job is the same job id with SLURM_RESTART_COUNT=1 and finds the saved count.
    assert resumed["restart_count"] == "1"
    assert resumed["count"] >= 2


@pytest.mark.slow
def test_time_limit_signal_requeues_checkpointable_job(slurm_cluster, tmp_path):
    # A 1-minute limit with USR2 30 s before it: SLURM sends the signal on its ~30 s timer, submitit
    # calls checkpoint() and requeues the job, which resumes from the saved count.
    state_path = tmp_path / "counter.json"
    total = 25
    job = _executor(slurm_cluster, tmp_path, timeout_min=1, slurm_signal_delay_s=30,
                    max_num_timeout=10).submit(slurm_jobs.CheckpointableCounter(), str(state_path), total, 1.0)

    state = _result(job, timeout_s=300)
    assert state["count"] == total
    starts = state["starts"]
    assert len(starts) >= 2, "the job finished without ever being signalled; is the time limit enforced?"
    assert [start["restart_count"] for start in starts] == [None] + [str(i) for i in range(1, len(starts))]
    counts = [start["count"] for start in starts]
    assert counts == sorted(counts)
