"""The `slurm_cluster` fixture: a single-node SLURM on localhost (tests/slurm/cluster.sh).

Uses a cluster that is already up only when it is the one cluster.sh started in $XSAMPLE_SLURM_DIR
(`cluster.sh status`: its daemons' pid files are alive and the answering controller keeps its state
there), so a cluster node's own SLURM is never used; otherwise starts one for the session on free
ports and stops it at the end. Skips when it cannot start one (not root, SLURM or munge not
installed), except under CI=true, where a missing cluster fails: CI must exercise these tests."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).with_name("cluster.sh")
REQUIRED_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")
SCRIPT_TIMEOUT_S = 180


@dataclass(frozen=True)
class SlurmCluster:
    state_dir: Path
    slurm_conf: Path
    partition: str


def _state_dir() -> Path:
    return Path(os.environ.get("XSAMPLE_SLURM_DIR", "/tmp/xsample-slurm"))


def _run_cluster_script(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), action],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False,
    )


def _cannot_start_reason() -> str | None:
    missing = [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]
    if missing:
        return (f"SLURM/munge programs not found: {', '.join(missing)} "
                "(install the Debian packages slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        return "starting the local SLURM cluster needs root (or start it first: sudo tests/slurm/cluster.sh up)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    started_here = False
    if _run_cluster_script("status").returncode != 0:
        reason = _cannot_start_reason()
        if reason is not None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but no SLURM cluster can be started: {reason}", pytrace=False)
            pytest.skip(reason)
        up = _run_cluster_script("up")
        if up.returncode != 0:
            pytest.fail(f"tests/slurm/cluster.sh up failed:\n{up.stdout}{up.stderr}", pytrace=False)
        started_here = True

    state_dir = _state_dir()
    cluster = SlurmCluster(
        state_dir=state_dir,
        slurm_conf=state_dir / "etc" / "slurm.conf",
        partition=os.environ.get("XSAMPLE_SLURM_PARTITION", "debug"),
    )
    # sbatch, squeue and scontrol (also those submitit and Hydra run) find the cluster through SLURM_CONF.
    previous_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.slurm_conf)
    try:
        yield cluster
    finally:
        if previous_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous_conf
        if started_here:
            down = _run_cluster_script("down")
            if down.returncode != 0:
                print(f"tests/slurm/cluster.sh down failed:\n{down.stdout}{down.stderr}")
