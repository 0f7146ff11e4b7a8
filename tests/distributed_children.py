"""Process bodies for the multi-process tests, in a module that imports little: each spawned process
imports it afresh."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from xsample.train.distributed import (
    FailureWatchdog,
    agreed_stop,
    announce_stop,
    init_distributed,
    report_failure,
)


def slurm_task(rank: int, run_dir: str, out_dir: str) -> None:
    """One task of a two-task SLURM-like job: meet through the run directory, sum once, then rank 1 fails
    between collectives while rank 0 waits in one."""
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        os.environ.pop(name, None)
    os.environ.update(SLURM_JOB_ID="4242", SLURM_STEP_ID="0", SLURM_RESTART_COUNT="1", SLURM_PROCID=str(rank),
                      SLURM_NTASKS="2", SLURM_LOCALID=str(rank))
    info = init_distributed("cpu", gpus_requested=0, timeout_s=30, rendezvous_dir=Path(run_dir))
    total = torch.tensor([info.rank + 1.0])
    dist.all_reduce(total)
    result: dict = {"sum": total.item()}
    announce_stop(info, 5 + info.rank)  # both ranks got a signal, rank 0 after step 5, rank 1 after step 6
    dist.barrier()
    result["stop_at"] = agreed_stop(info)
    recorded: list[dict] = []
    info.watchdog = FailureWatchdog(info, recorded.append).start()
    if info.rank == 1:
        time.sleep(1.0)
        report_failure(info, {"rank": 1, "step": 7, "error": "RuntimeError: boom"})
    else:
        started = time.monotonic()
        try:
            dist.all_reduce(torch.ones(1))
            result["raised"] = False
        except Exception:  # noqa: BLE001  whatever the backend raises once its peer has gone
            result["raised"] = True
        result.update(seconds=time.monotonic() - started, recorded=recorded, report=info.watchdog.report)
        info.watchdog.stop()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
