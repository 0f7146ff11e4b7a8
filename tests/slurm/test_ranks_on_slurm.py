"""Two tasks per job on the local SLURM (hydra-submitit, srun, gloo): the evaluation nobody waits for, and
`scontrol requeue` of a running two-task job, which must end with the loss curve of an uninterrupted one."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm.test_reproduce_on_slurm import _finish, _reproduce, _wait_for_checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.rehearsal, pytest.mark.slow]
TWO_TASKS = ["scale.resources.tasks_per_node=2", "scale.resources.cpus_per_task=1"]
RUN = ["-m", "table=2", "row=augmentation", "seed=0", "launcher=slurm", *TWO_TASKS]


def _result(sweeps: Path) -> dict:
    (result,) = sweeps.glob("table2_tiny/runs/*/result.json")
    return json.loads(result.read_text())


def test_a_two_task_job_outlives_a_collective_timeout_shorter_than_its_evaluation(slurm_cluster, tmp_path):
    # The probe's features over all 60000 Fashion-MNIST training images: an evaluation far past 10 s.
    _finish(_reproduce(tmp_path, *RUN, "scale.epochs=1", "runtime.distributed_timeout_s=10",
                       "eval_suites.fashion_mnist.evaluations.imagenet.train.options.max_samples=60000"), 900)
    record = _result(tmp_path)
    assert record["status"] == "completed" and record["hardware"]["world_size"] == 2
    assert record["timing"]["eval_s"] > 10, "the evaluation outlasted the collective timeout"


def test_scontrol_requeue_of_a_two_task_job_ends_with_the_uninterrupted_loss_curve(slurm_cluster, tmp_path):
    _finish(_reproduce(tmp_path / "reference", *RUN, "scale.epochs=2"), 900)
    expected = _result(tmp_path / "reference")

    submitted = _reproduce(tmp_path / "requeued", *RUN, "scale.epochs=2")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not list((tmp_path / "requeued").glob("table2_tiny/runs/*/result.json")):
        time.sleep(0.5)
    (result,) = (tmp_path / "requeued").glob("table2_tiny/runs/*/result.json")
    _wait_for_checkpoint(result, 3, 600)
    job_ids = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    assert len(job_ids) == 1, job_ids
    subprocess.run(["scontrol", "requeue", job_ids[0]], check=True)
    _finish(submitted, 900)

    final = json.loads(result.read_text())
    assert final["status"] == "completed" and final["hardware"]["world_size"] == 2
    assert final["resumed_from"] is not None and final["resumed_from"] >= 3
    assert [s for s, _ in final["loss_curve"]] == [s for s, _ in expected["loss_curve"]]
    assert [v for _, v in final["loss_curve"]] == pytest.approx([v for _, v in expected["loss_curve"]], abs=1e-5)
