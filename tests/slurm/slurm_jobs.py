"""Functions the smoke tests run as SLURM jobs. The tests pickle this module by value, so the jobs do
not depend on the repository being importable from the job's working directory."""

import json
import os
import socket
import time

import submitit

from xsample.io import atomic_write_json


def describe_job_environment() -> dict:
    return {
        "hostname": socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }


def count_with_checkpoint(state_path: str, total: int, step_s: float) -> dict:
    """Counts to `total`, one step every `step_s` seconds, saving the count after each step so that
    a requeued job resumes where the killed one stopped. Records every (re)start in the state."""
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    else:
        state = {"count": 0, "starts": []}
    state["starts"].append({"count": state["count"], "restart_count": os.environ.get("SLURM_RESTART_COUNT")})
    atomic_write_json(state_path, state)
    while state["count"] < total:
        time.sleep(step_s)
        state["count"] += 1
        atomic_write_json(state_path, state)
    return state


class CheckpointableCounter(submitit.helpers.Checkpointable):
    """count_with_checkpoint as a submitit Checkpointable: on the time-limit signal (USR2) submitit calls
    checkpoint(), which resubmits the same call, and requeues the job."""

    def __call__(self, state_path: str, total: int, step_s: float) -> dict:
        return count_with_checkpoint(state_path, total, step_s)

