"""reproduce.py through hydra-submitit-launcher on the local SLURM cluster, and preemption recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = ["scale.epochs=2", "scale.batch_size=128", "scale.checkpoint_every_steps=1", "scale.probe.epochs=30",
         "datasets.fashion_mnist.tiny.options.max_samples=1024"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _reproduce(sweeps: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "experiments/reproduce.py", *overrides, f"paths.sweeps={sweeps}",
               f"paths.cache={sweeps / 'cache'}", f"paths.figures={sweeps / 'figures'}", *SMALL]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _finish(process: subprocess.Popen, timeout_s: float) -> str:
    try:
        output = process.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"reproduce.py did not finish in {timeout_s} s:\n{process.communicate()[0]}")
    assert process.returncode == 0, output
    return output


def _wait_for_checkpoint(result: Path, step: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result.exists() and (json.loads(result.read_text()).get("checkpoint_step") or 0) >= step:
            return
        time.sleep(0.2)
    pytest.fail(f"no checkpoint at step {step} in {result} after {timeout_s} s")


def test_table1_tiny_sweep_completes_as_a_slurm_job_array(slurm_cluster, tmp_path):
    output = _finish(_reproduce(tmp_path, "-m", "table=1", "scale=tiny", "seed=0", "scale.epochs=1"), 900)
    assert output.splitlines()[0].startswith("xsample: launcher=slurm (auto: sbatch found")
    runs = sorted((tmp_path / "table1_tiny" / "runs").iterdir())
    # The small settings depart from the table's grid: each run name carries that variant's tag.
    assert [r.name.split("+")[0] for r in runs] == ["simclr_imagenet_seed0", "supcon_imagenet_seed0",
                                                     "untrained_imagenet_seed0", "xclr_imagenet_seed0"]
    for run in runs:
        record = json.loads((run / "result.json").read_text())
        assert record["status"] == "completed", record.get("error")
        assert record["metrics"]["imagenet"]["top1"] > 0
    assert (tmp_path / "figures" / "tiny" / "table1_tiny.md").is_file()


def test_scontrol_requeue_resumes_and_matches_an_uninterrupted_run(slurm_cluster, tmp_path):
    single = ["table=2", "row=augmentation", "scale.epochs=3"]
    _finish(_reproduce(tmp_path / "reference", *single, "launcher=local"), 600)
    reference = next((tmp_path / "reference" / "table2_tiny" / "runs").iterdir())

    submitted = _reproduce(tmp_path / "requeued", "-m", *single, "launcher=slurm")
    result = tmp_path / "requeued" / "table2_tiny" / "runs" / reference.name / "result.json"
    _wait_for_checkpoint(result, 3, 600)
    job_ids = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    assert len(job_ids) == 1, job_ids
    subprocess.run(["scontrol", "requeue", job_ids[0]], check=True)
    _finish(submitted, 900)

    final, expected = json.loads(result.read_text()), json.loads((reference / "result.json").read_text())
    assert final["status"] == "completed"
    assert final["resumed_from"] is not None and final["resumed_from"] >= 3
    assert final["metrics"] == expected["metrics"]


def test_local_submitit_time_limit_signal_checkpoints_and_requeues(tmp_path):
    """The local launcher's time-out path: SIGUSR2 (what submitit sends before a time limit) makes the
    run save a checkpoint and hand over to submitit, which restarts it; the restart resumes."""
    process = _reproduce(tmp_path, "-m", "table=2", "row=augmentation", "scale.epochs=3", "launcher=submitit_local")
    runs = tmp_path / "table2_tiny" / "runs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (runs.exists() and any(runs.iterdir())):
        time.sleep(0.2)
    result = next(runs.iterdir()) / "result.json"
    _wait_for_checkpoint(result, 2, 300)
    task = subprocess.run(["pgrep", "-f", "submitit.core._submit"], capture_output=True, text=True).stdout.split()
    assert task, "no submitit task process found"
    for pid in task:
        os.kill(int(pid), signal.SIGUSR2)
    _finish(process, 600)
    final = json.loads(result.read_text())
    assert final["status"] == "completed"
    assert final["resumed_from"] is not None and final["resumed_from"] >= 2
