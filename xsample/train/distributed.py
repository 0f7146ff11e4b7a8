"""The ranks of one run: their devices, how they meet, how long they wait for each other, how one
rank's failure ends all of them, and how they part when training is over.

Devices. ``runtime.device`` is ``auto`` (CUDA when visible, else the CPU), ``cpu``, ``cuda`` or, for a
single process, ``cuda:N``. Each rank takes GPU ``local_rank % device_count()``: SLURM may bind one GPU
per task (every task then sees a single ``cuda:0``), torchrun shows a rank all of them. A run whose
resources ask for GPUs (``resources.gpus_per_node > 0``) and finds none fails at once with the cause;
it never falls back to the CPU.

Rendezvous. torchrun (or anything that sets ``MASTER_ADDR`` and ``MASTER_PORT``) is used as it is. Under
SLURM without those, rank 0 opens the TCP store on a port the operating system hands out, so two jobs on
one node cannot collide, and publishes ``host:port`` in the run directory (on the shared file system the
ranks already share the checkpoint through); the other ranks read it. The file is named after the job,
step and restart count, so a requeued job never reads its previous attempt's address, and no node list
has to be parsed.

Timeout. ``runtime.distributed_timeout_s`` bounds every wait of one rank for the others. Nothing waits for
evaluation: when training ends every rank leaves the group (``leave``) and rank 0 evaluates alone.

Failures. A rank whose run raises reports (rank, step, error) in the store, waits briefly for rank 0 to
record it in result.json, and closes its process group. Every rank runs a watchdog thread that polls the
store (``FAILURE_POLL_S``); when another rank reported, rank 0 records that report in result.json, and
each rank aborts its own group: a pending NCCL collective then fails at once (gloo's already failed when
the reporting rank closed its connections). The blocked main thread raises and the run ends through its
usual error path on every rank, which is what lets submitit collect every task's result. A rank still
blocked ``PEER_FAILURE_GRACE_S`` after the report is ended by its watchdog (exit status 1). A rank killed
outright (OOM killer, lost node) reports nothing: torchrun stops the other workers, srun does with
``SLURM_KILL_BAD_EXIT=1`` (configs/launcher/slurm.yaml), and the collective timeout is the last resort.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from xsample.io import atomic_write_json
from xsample.validation import device_problem

FAILURE_POLL_S = 0.25
ACK_WAIT_S = 5.0  # how long a failing rank waits for rank 0 to record its report
PEER_FAILURE_GRACE_S = 15.0
RENDEZVOUS_POLL_S = 0.2
_REPORT, _REPORTS, _ACK = "failure", "failure_count", "failure_recorded"
_generation = 0  # one store namespace per group this process joins


class DeviceError(RuntimeError):
    """The run cannot have the device it needs (named in the message); nothing was trained."""


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    store: Any = field(default=None, repr=False)  # the run's namespace of the rendezvous store (world_size > 1)
    watchdog: FailureWatchdog | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def grouped(self) -> bool:
        """Whether this rank is (still) in the run's process group."""
        return self.world_size > 1 and dist.is_initialized()


def environment_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables, else SLURM's (one task per GPU)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def environment_rank() -> int:
    """This process's global rank as the launcher set it (0 when not distributed), before any group exists."""
    return environment_ranks()[0]


# --- devices -----------------------------------------------------------------------------------------
def _no_cuda_cause() -> str:
    built = torch.version.cuda
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ("no CUDA device is visible (" + (f"torch {torch.__version__} is a CPU-only build" if built is None else
            f"torch built for CUDA {built}; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else
            f"torch built for CUDA {built}; the driver found no GPU (nvidia-smi shows what the node has)") + ")")


def resolve_device(choice: str, local_rank: int, world_size: int, gpus_requested: int) -> torch.device:
    """The training device of this rank for ``runtime.device=choice`` (see the module docstring)."""
    if (problem := device_problem(choice)) is not None:
        raise ValueError(problem)
    available = torch.cuda.is_available()
    if choice == "cpu" or (choice == "auto" and not available and gpus_requested == 0):
        return torch.device("cpu")
    if not available:
        asked = (f"this run's resources ask for {gpus_requested} GPU(s) per node (scale.resources.gpus_per_node)"
                 if gpus_requested else f"runtime.device={choice}")
        raise DeviceError(f"{asked} but {_no_cuda_cause()}; nothing was trained. Fix the node or the job's GPU "
                          "request, or run on the CPU on purpose with runtime.device=cpu")
    count = torch.cuda.device_count()
    if choice.startswith("cuda:"):
        index = int(choice.split(":")[1])
        if world_size > 1:
            raise ValueError(f"runtime.device={choice} names one GPU, but this run has {world_size} ranks, each on "
                             "GPU local_rank % device_count(); use runtime.device=cuda")
        if index >= count:
            raise DeviceError(f"runtime.device={choice} but this process sees {count} GPU(s) (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    return torch.device("cuda", local_rank % count)


# --- rendezvous --------------------------------------------------------------------------------------
def _launch_token() -> str:
    return "-".join(os.environ.get(name) or "0" for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT"))


def _rendezvous_file(directory: Path) -> Path:
    return Path(directory) / f".rendezvous-{_launch_token()}.json"


def _published_store(rank: int, world_size: int, directory: Path, timeout: timedelta):
    """The TCP store rank 0 opens on a free port and announces in ``directory`` (see the module docstring)."""
    path = _rendezvous_file(directory)
    if rank == 0:
        for stale in Path(directory).glob(".rendezvous-*.json"):
            stale.unlink(missing_ok=True)
        host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        store = dist.TCPStore(host, 0, world_size, True, timeout=timeout, wait_for_workers=False)
        atomic_write_json(path, {"host": host, "port": store.port})
        return store
    deadline = time.monotonic() + timeout.total_seconds()
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not announce its address in {path} within {timeout.total_seconds():.0f} s "
                               "(runtime.distributed_timeout_s); is the run directory on a file system all nodes share?")
        time.sleep(RENDEZVOUS_POLL_S)
    address = json.loads(path.read_text())
    return dist.TCPStore(address["host"], int(address["port"]), world_size, False, timeout=timeout)


def _store(rank: int, world_size: int, rendezvous_dir: Path, timeout: timedelta):
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout))
        return store
    if "SLURM_JOB_ID" in os.environ:
        return _published_store(rank, world_size, rendezvous_dir, timeout)
    raise RuntimeError(f"rank {rank} of {world_size}: no MASTER_ADDR/MASTER_PORT and no SLURM job to meet the other "
                       "ranks through; launch several ranks with torchrun or srun")


def init_distributed(device: str, *, gpus_requested: int, timeout_s: float, rendezvous_dir: Path) -> DistInfo:
    """This rank's device and, with several ranks, the run's process group (NCCL on GPU, gloo on CPU)."""
    if not float(timeout_s) > 0:
        raise ValueError(f"runtime.distributed_timeout_s must be a positive number of seconds, got {timeout_s}")
    rank, world_size, local_rank = environment_ranks()
    torch_device = resolve_device(device, local_rank, world_size, gpus_requested)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    info = DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)
    if world_size > 1:
        global _generation
        _generation += 1
        timeout = timedelta(seconds=float(timeout_s))
        store = _store(rank, world_size, rendezvous_dir, timeout)
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo", store=store, rank=rank,
                                world_size=world_size, timeout=timeout)
        info.store = dist.PrefixStore(f"xsample/{_generation}", store)
        dist.barrier()
        if rank == 0:
            _rendezvous_file(rendezvous_dir).unlink(missing_ok=True)
    return info


def leave(info: DistInfo) -> None:
    """End this rank's part in the group once training is over (every rank calls it at the same point):
    after a last barrier nobody waits on anybody, so rank 0 can evaluate alone for as long as it takes."""
    if not info.grouped:
        return
    dist.barrier()
    if info.watchdog is not None:
        info.watchdog.stop()
    dist.destroy_process_group()


# --- failures ----------------------------------------------------------------------------------------
class FailureWatchdog:
    """Polls the store for another rank's failure report (see the module docstring). ``record(report)``
    runs on rank 0 when a report arrives, before the rank stops."""

    def __init__(self, info: DistInfo, record: Callable[[dict[str, Any]], None]):
        self.info, self.record = info, record
        self.report: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="xsample-failure-watchdog", daemon=True)

    def start(self) -> FailureWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _watch(self) -> None:
        store = self.info.store
        while not self._stop.wait(FAILURE_POLL_S):
            try:
                if not store.check([_REPORT]):
                    continue
                report = json.loads(store.get(_REPORT))
            except Exception as error:  # noqa: BLE001  the store is gone: its host (rank 0 or torchrun) ended
                report = {"rank": 0, "step": None, "error": f"the rendezvous store stopped answering ({error})"}
            if report["rank"] == self.info.rank:
                return
            self.report = report
            if self.info.is_main:
                try:
                    self.record(report)
                finally:
                    store.set(_ACK, "1")
            _abort_group()
            if not self._stop.wait(PEER_FAILURE_GRACE_S):
                print(f"xsample: rank {self.info.rank}: still blocked {PEER_FAILURE_GRACE_S:.0f} s after rank "
                      f"{report['rank']} failed; exiting", flush=True)
                os._exit(1)
            return


def _abort_group() -> None:
    if dist.is_initialized():
        try:
            dist.distributed_c10d._abort_process_group()
        except Exception:  # noqa: BLE001  a backend without abort: the failing rank closing its group unblocks it
            pass


def report_failure(info: DistInfo, report: dict[str, Any]) -> None:
    """Tell the other ranks that this one failed (``report``: rank, step, error, traceback; the first report
    of a run wins), wait for rank 0 to record it, and close this rank's process group so that peers blocked
    on it are released."""
    if info.store is None or not info.grouped:
        return
    if info.watchdog is not None:
        info.watchdog.stop()
    try:
        if info.store.add(_REPORTS, 1) == 1:
            info.store.set(_REPORT, json.dumps(report))
            deadline = time.monotonic() + ACK_WAIT_S
            while not info.is_main and not info.store.check([_ACK]) and time.monotonic() < deadline:
                time.sleep(FAILURE_POLL_S)
    except Exception:  # noqa: BLE001  the store is gone too: closing the group below still releases the peers
        pass
    dist.destroy_process_group()


# --- stopping together on a signal ---------------------------------------------------------------------
_STOP = "stop_at_step"
STOP_MARGIN_STEPS = 2  # a rank can be at most one step ahead of another (each step has a collective)


def announce_stop(info: DistInfo, step: int) -> None:
    """A signal reached this rank after ``step``: propose stopping at ``step + STOP_MARGIN_STEPS`` (the first
    proposal stands), a step every rank reaches after it has read the proposal."""
    info.store.compare_set(_STOP, "", str(step + STOP_MARGIN_STEPS))


def agreed_stop(info: DistInfo) -> int | None:
    """The step at which the ranks stop for a signal, once one was proposed (a store read, no device sync)."""
    return int(info.store.get(_STOP)) if info.store.check([_STOP]) else None


# --- collectives the training loop uses ---------------------------------------------------------------
def barrier(info: DistInfo) -> None:
    if info.grouped:
        dist.barrier()


def sum_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise sum over ranks (one all_reduce), in place; the tensor itself when alone."""
    if info.grouped:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(value: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``value`` in rank order (a collective); ``[value]`` when alone."""
    if not info.grouped:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
