"""reproduce.py through hydra-submitit-launcher on the local SLURM cluster, and preemption recovery."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = ["scale.epochs=2", "scale.batch_size=128", "scale.checkpoint_every_steps=1", "scale.probe.epochs=30",
         "datasets.fashion_mnist.tiny.options.max_samples=1024"]

# Whole sweeps through SLURM take minutes each: make test-long runs them (make test keeps the cluster smoke and
# fault tests, and the refused submission below).
pytestmark = [pytest.mark.slurm, pytest.mark.slow]
LONG = pytest.mark.long


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


@LONG
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


@LONG
def test_scontrol_requeue_resumes_and_matches_an_uninterrupted_run(slurm_cluster, tmp_path):
    single = ["table=2", "row=augmentation", "seed=0", "scale.epochs=3"]
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


@LONG
def test_local_submitit_time_limit_signal_checkpoints_and_requeues(tmp_path):
    """The local launcher's time-out path: SIGUSR2 (what submitit sends before a time limit) makes the
    run save a checkpoint and hand over to submitit, which restarts it; the restart resumes."""
    process = _reproduce(tmp_path, "-m", "table=2", "row=augmentation", "seed=0", "scale.epochs=3", "launcher=submitit_local")
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


# ---- plan once: relaunch, detach, refusal (issues 21 and 23) -------------------------------------------------
FEW = ["scale=tiny", "scale.epochs=1", "scale.batch_size=128", "datasets.fashion_mnist.tiny.options.max_samples=512",
       "eval_suites.fashion_mnist.evaluations.imagenet.train.options.max_samples=512",
       "eval_suites.fashion_mnist.evaluations.imagenet.test.options.max_samples=256", "scale.probe.epochs=5"]
TWO_ROWS = ["-m", "table=2", "row=augmentation,untrained", "seed=0", *FEW]


def _run(sweeps: Path, *overrides: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "experiments/reproduce.py", *overrides, f"paths.sweeps={sweeps}",
               f"paths.cache={sweeps / 'cache'}", f"paths.figures={sweeps / 'figures'}"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _submitted_arrays(output: str) -> list[str]:
    return [line.split("job array ")[1].split()[0] for line in output.splitlines() if "as job array" in line]


@LONG
def test_a_relaunch_submits_only_the_runs_that_are_not_completed(slurm_cluster, tmp_path):
    first = _run(tmp_path, *TWO_ROWS)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(_submitted_arrays(first.stdout)) == 1
    again = _run(tmp_path, *TWO_ROWS)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 completed; 0 to launch" in again.stdout and not _submitted_arrays(again.stdout)
    assert "table2_tiny.md" in again.stdout  # the report is rendered and its location printed
    runs = tmp_path / "table2_tiny" / "runs"
    missing = next(run for run in runs.iterdir() if run.name.startswith("untrained"))
    shutil.rmtree(missing)
    half = _run(tmp_path, *TWO_ROWS)
    assert half.returncode == 0, half.stdout + half.stderr
    assert "1 new, 1 completed; 1 to launch" in half.stdout
    assert "submitted 1 run(s) as job array" in half.stdout
    assert json.loads((missing / "result.json").read_text())["status"] == "completed"


@LONG
def test_detach_returns_while_the_array_runs_and_the_report_matches_an_attached_run(slurm_cluster, tmp_path):
    attached = _run(tmp_path / "attached", *TWO_ROWS)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    detached = _run(tmp_path / "detached", *TWO_ROWS, "detach=true", timeout_s=120)
    assert detached.returncode == 0, detached.stdout + detached.stderr
    (array,) = _submitted_arrays(detached.stdout)
    assert "python -m analysis status" in detached.stdout and "python -m analysis report" in detached.stdout
    queued = subprocess.run(["squeue", "-h", "-j", array, "-o", "%i"], capture_output=True, text=True).stdout.split()
    results = list((tmp_path / "detached").rglob("result.json"))
    assert queued or not all(json.loads(r.read_text())["status"] == "completed" for r in results), \
        "the command returned only after its array had ended"
    deadline = time.monotonic() + 900
    while subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the detached array did not end"
        time.sleep(2)
    reports = {}
    for name in ("attached", "detached"):
        out = tmp_path / name / "report"
        done = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path / name / "table2_tiny"),
                               "--out", str(out)], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        reports[name] = (out / "table2_tiny.md").read_text()
    assert reports["attached"] == reports["detached"]


def test_a_submission_slurm_refuses_is_one_line_and_leaves_nothing(slurm_cluster, tmp_path):
    out = _run(tmp_path, *TWO_ROWS, "hydra.launcher.partition=nonexistent")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "scheduler refused" in lines[0] and "partition" in lines[0].lower(), out.stderr
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []
