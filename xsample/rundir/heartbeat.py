"""Where a run lives and when it last reported, so a killed run (OOM kill, lost node, kill -9) can be
told from a running one: its result.json says "running" forever, but its heartbeat stops and its
process or SLURM job is gone.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# A run is stale when silent for this many log intervals (and at least MIN_STALE_S) and its process is gone.
STALE_LOG_INTERVALS = 3
MIN_STALE_S = 120.0
SLURM_ACTIVE_STATES = {"RUNNING", "PENDING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                       "STAGE_OUT", "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "STOPPED"}


def _now_iso(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).isoformat(timespec="seconds")


def _process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux): tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def new_heartbeat() -> dict[str, Any]:
    """This process's identity (host, pid, SLURM ids) and the start time, for result.json."""
    now = _now_iso()
    return {
        "host": socket.gethostname(), "pid": os.getpid(), "pid_start_ticks": _process_start_ticks(os.getpid()),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "started_at": now, "last_update": now, "step": None, "log_interval_s": None,
    }


def beat(heartbeat: dict[str, Any], step: int | None = None) -> None:
    """Refresh ``last_update``; at a log step also record the step and the time since the previous one."""
    now = time.time()
    if step is not None:
        previous = heartbeat.get("_last_log_time")
        if previous is not None:
            heartbeat["log_interval_s"] = round(now - previous, 3)
        heartbeat["_last_log_time"] = now
        heartbeat["step"] = step
    heartbeat["last_update"] = _now_iso(now)


def public(heartbeat: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in heartbeat.items() if not key.startswith("_")}


def _slurm_job_state(job_id: str) -> str | None:
    """The job's state from squeue, else sacct; "" when SLURM does not know it; None without SLURM."""
    for command in (["squeue", "--noheader", "--jobs", job_id, "--format=%T"],
                    ["sacct", "--noheader", "--parsable2", "--jobs", job_id, "--format=State", "--allocations"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            answer = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        states = answer.stdout.split()
        if answer.returncode == 0:
            return states[0].rstrip("+") if states else ""  # squeue lists active jobs only
        if "Invalid job id" in answer.stderr:
            return ""
    return None


def process_gone(heartbeat: dict[str, Any]) -> tuple[bool | None, str]:
    """(True, why) when the run's SLURM job or process has ended, (False, why) when it is alive,
    (None, why) when this machine cannot tell (another host, no SLURM)."""
    job_id = heartbeat.get("slurm_job_id")
    if job_id:
        state = _slurm_job_state(str(job_id))
        if state is not None:
            if state in SLURM_ACTIVE_STATES:
                return False, f"SLURM job {job_id} is {state}"
            return True, f"SLURM job {job_id} is {state or 'gone'}"
    pid, host = heartbeat.get("pid"), heartbeat.get("host")
    if host != socket.gethostname() or not isinstance(pid, int):
        return None, f"pid {pid} runs on {host}, not this host"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True, f"process {pid} on {host} is gone"
    except PermissionError:
        pass  # exists, owned by someone else
    started = heartbeat.get("pid_start_ticks")
    if started is not None and _process_start_ticks(pid) not in (None, started):
        return True, f"process {pid} on {host} is gone (the pid now belongs to another process)"
    return False, f"process {pid} on {host} is alive"


def staleness(heartbeat: Any, now: float | None = None) -> str | None:
    """Why a "running" run is dead, or None when it may be alive (or there is no heartbeat)."""
    if not isinstance(heartbeat, dict) or not heartbeat.get("last_update"):
        return None
    try:
        last = datetime.fromisoformat(heartbeat["last_update"]).timestamp()
    except (TypeError, ValueError):
        return None
    age = (time.time() if now is None else now) - last
    interval = heartbeat.get("log_interval_s") or 0.0
    if age < max(STALE_LOG_INTERVALS * float(interval), MIN_STALE_S):
        return None
    gone, why = process_gone(heartbeat)
    return f"no heartbeat for {age / 60:.0f} min and {why}" if gone else None
