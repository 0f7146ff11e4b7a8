"""Against the local cluster: a second cluster.sh cluster keeps off the ports of a running SLURM, and
the heartbeat check asks SLURM whether a run's job is still alive."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.slurm.conftest import CLUSTER_SCRIPT
from xsample.rundir.heartbeat import process_gone

pytestmark = pytest.mark.slurm


def _cluster_script(action: str, state_dir, **environment) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "XSAMPLE_SLURM_PORT"}
    env.update(XSAMPLE_SLURM_DIR=str(state_dir), **environment)
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), action], capture_output=True, text=True, env=env,
                          timeout=180, check=False)


def _port(slurm_conf) -> int:
    return int(next(line.split("=", 1)[1] for line in slurm_conf.read_text().splitlines()
                    if line.startswith("SlurmctldPort=")))


def test_second_cluster_takes_free_ports_and_refuses_a_taken_one(slurm_cluster):
    # munged needs every directory above its socket searchable by all: pytest's tmp_path is 0700.
    tmp_path = Path(tempfile.mkdtemp(prefix="xsample-slurm-second-"))
    tmp_path.chmod(0o755)
    taken = _port(slurm_cluster.slurm_conf)
    refused = _cluster_script("up", tmp_path / "explicit", XSAMPLE_SLURM_PORT=str(taken))
    assert refused.returncode != 0
    assert f"port {taken}" in refused.stderr and "is taken by slurmctld" in refused.stderr
    assert "XSAMPLE_SLURM_PORT=" in refused.stderr
    second = tmp_path / "second"
    try:
        up = _cluster_script("up", second)
        assert up.returncode == 0, up.stderr
        assert _port(second / "etc" / "slurm.conf") not in (taken, taken + 1)
        # The first cluster is untouched and still answers to its own config.
        assert subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") == 1
    finally:
        _cluster_script("down", second)
        _cluster_script("down", tmp_path / "explicit")
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True).returncode == 0


def _submit(command: str, partition: str) -> str:
    answer = subprocess.run(["sbatch", "--parsable", f"--partition={partition}", "--mem=100M",
                             "--output=/dev/null", f"--wrap={command}"], capture_output=True, text=True, check=True)
    return answer.stdout.strip().split(";")[0]


def test_heartbeat_check_asks_slurm_about_the_job(slurm_cluster):
    elsewhere = {"host": "another-node", "pid": 1}
    running = _submit("sleep 60", slurm_cluster.partition)
    finished = _submit("true", slurm_cluster.partition)
    try:
        deadline = time.monotonic() + 60
        while (verdict := process_gone({**elsewhere, "slurm_job_id": finished}))[0] is not True:
            assert verdict[0] is False and time.monotonic() < deadline, f"the 'true' job did not end: {verdict}"
            time.sleep(1)
        assert finished in verdict[1]
        gone, why = process_gone({**elsewhere, "slurm_job_id": running})
        assert gone is False and ("RUNNING" in why or "PENDING" in why or "CONFIGURING" in why)
    finally:
        subprocess.run(["scancel", running], check=False)
