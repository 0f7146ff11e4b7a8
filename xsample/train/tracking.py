"""Training curves for TensorBoard and Weights & Biases, written by the main rank only.

``runtime.logger`` names the loggers: ``tensorboard``, ``wandb``, a list of both (``[tensorboard,wandb]``) or
``none``. Every logger gets the same scalars: ``train/loss`` at every step (the loop hands them over in
windows, at its sync points); every ``runtime.log_every_steps`` steps (and the last) also the learning rate,
images/s, the fractions of wall time spent waiting for the data loader and preparing batches on the device,
the gradient norm and, for CLIP, the logit scale; the final evaluation metrics under ``eval/`` at the last
training step.

TensorBoard: event files in the run directory. A resumed run hides the events a killed process wrote after
its last checkpoint (TensorBoard's purge step), so its curves continue without duplicated steps.

Weights & Biases (the optional extra ``pip install -e ".[wandb]"``): one W&B run per run directory, with the
run config and its provenance (config hash, git commit, package versions, hardware) as the W&B config. Its id
is derived from the run's identity (run directory, config hash, time of the first start) and kept in
``wandb_run.json`` in the run directory, so a requeued or resumed job continues the same W&B run while a
``force=true`` rerun, which starts from an empty directory, gets a new one. W&B cannot hide steps it has
received, so rows are sent in groups (at log steps, before each checkpoint, at the end), each group after
``wandb_run.json`` records its last step; a resumed process skips the steps already sent, and no step appears
twice. The mode is ``WANDB_MODE`` when set; otherwise online when W&B credentials exist and the server
answers, offline (files under ``<run dir>/wandb/``, uploaded later with ``wandb sync``) on a node without
network or login.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import netrc
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import torch
from torch import nn

from xsample.config import RunConfig
from xsample.io import atomic_write_json
from xsample.rundir.preemption import Preempted
from xsample.train.distributed import DistInfo

LOGGERS = ("tensorboard", "wandb")
NO_LOGGER = "none"
WANDB_INSTALL = 'pip install -e ".[wandb]"'
WANDB_STATE = "wandb_run.json"
WANDB_DEFAULT_SERVER = "https://api.wandb.ai"
WANDB_PROBE_TIMEOUT_S = 3.0


def _requested(value: Any) -> list[str] | None:
    """The logger names ``runtime.logger`` holds (a name or a list of names), or None when malformed."""
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else None
    if not names or not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        return None
    return names


def logger_problem(config: dict[str, Any]) -> str | None:
    """The line that says ``runtime.logger`` of a composed config cannot be used, or None."""
    return _logger_problem(config["runtime"]["logger"])


def _logger_problem(value: Any) -> str | None:
    """The line that says the logger choice ``value`` cannot be used (unknown name, W&B not installed), or None."""
    value = list(value) if isinstance(value, tuple) else value  # shown as the command line writes a list
    names = _requested(value)
    allowed = [NO_LOGGER] if names == [NO_LOGGER] else LOGGERS
    if names is None or any(name not in allowed for name in names):
        return (f"runtime.logger={value!r} is not supported; choose one of {', '.join(LOGGERS)}, {NO_LOGGER}, "
                f"or a list such as [{','.join(LOGGERS)}]")
    if "wandb" in names and importlib.util.find_spec("wandb") is None:
        return f"runtime.logger={value!r} needs Weights & Biases, which is not installed; install it with: {WANDB_INSTALL}"
    return None


def logger_choices(value: str | tuple[str, ...]) -> list[str]:
    """``runtime.logger``, checked, as a list of logger names ([] for none)."""
    problem = _logger_problem(value)
    if problem is not None:
        raise ValueError(problem)
    names = _requested(value)
    return [] if names == [NO_LOGGER] else names


def gradient_norm(model: nn.Module) -> float:
    """L2 norm over all parameter gradients (after the optimiser step they are unscaled, also under fp16)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class LogWindow(NamedTuple):
    """Throughput over the steps since the previous log step, as the step line prints it."""
    images_per_s: float
    data_wait_fraction: float  # of the window's wall time spent blocked on the data loader
    input_fraction: float = 0.0  # of the window's wall time spent preparing batches on the device (may overlap)


def _numeric_leaves(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    leaves = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            leaves.update(_numeric_leaves(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            leaves[f"{prefix}{key}"] = float(value)
    return leaves


class _TensorBoard:
    def __init__(self, run_dir: Path, resumed_from: int | None):
        # Imported here: tensorboard (protobuf, grpc) costs a second and is not needed without it.
        from torch.utils.tensorboard import SummaryWriter

        # Steps up to the checkpoint are on disk (flushed before each checkpoint); later ones belong to a
        # process that died after it and are hidden, because this run writes them again.
        self.writer = SummaryWriter(str(run_dir), purge_step=(resumed_from or 0) + 1)

    def scalars(self, step: int, values: dict[str, float], group_ends: bool) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def final(self, step: int, values: dict[str, float]) -> None:
        self.scalars(step, values, group_ends=True)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, error: BaseException | None) -> None:
        self.writer.close()


def _has_wandb_credentials(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> tuple[str, str]:
    """(W&B mode, why): ``WANDB_MODE`` when set, else online only with credentials and a server that answers."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE is set"
    server = urlparse(os.environ.get("WANDB_BASE_URL") or WANDB_DEFAULT_SERVER)
    host = server.hostname or ""
    if not _has_wandb_credentials(host):
        return "offline", f"no W&B credentials for {host} (WANDB_API_KEY or `wandb login`)"
    try:
        socket.create_connection((host, server.port or (443 if server.scheme == "https" else 80)),
                                 timeout=WANDB_PROBE_TIMEOUT_S).close()
    except OSError as error:
        return "offline", f"{host} cannot be reached from this node ({error})"
    return "online", f"{host} answers"


def wandb_run_id(run_dir: Path, config_hash: str, first_started: str) -> str:
    """The W&B id of the run in ``run_dir``: the same for every job that continues it."""
    identity = f"{Path(run_dir).resolve()}\n{config_hash}\n{first_started}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class _WandB:
    def __init__(self, config: RunConfig, run_dir: Path, provenance: dict[str, Any]):
        import wandb

        self.state_path = run_dir / WANDB_STATE
        try:
            self.state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):  # a first start (a torn file cannot exist: it is written atomically)
            first_started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.state = {"id": wandb_run_id(run_dir, provenance["config_hash"], first_started),
                          "first_started": first_started, "sent_through_step": 0, "final_metrics_sent": False}
            atomic_write_json(self.state_path, self.state)
        self.pending: list[tuple[int, dict[str, float]]] = []
        mode, why = wandb_mode()
        labels = config.experiment
        settings = config.runtime.wandb
        self.run = wandb.init(
            id=self.state["id"], resume="allow", dir=str(run_dir), mode=mode, project=settings.project,
            entity=settings.entity, group=f"table{labels.table}_{labels.scale}", name=run_dir.name,
            tags=[labels.method, labels.dataset, labels.scale],
            config={**config.to_dict(), "provenance": provenance},
            # The step lines stay in the job's own log; W&B gets the scalars.
            settings=wandb.Settings(console="off"),
        )
        if mode == "offline":
            print(f"xsample: W&B run {self.state['id']} is offline ({why}); upload it later with: "
                  f"wandb sync {run_dir / 'wandb'}/offline-run-*", flush=True)

    def scalars(self, step: int, values: dict[str, float], group_ends: bool) -> None:
        if step <= self.state["sent_through_step"]:
            return  # an earlier process of this run sent it
        self.pending.append((step, values))
        if group_ends:
            self.flush()

    def _record(self, **changes: Any) -> None:
        self.state.update(changes)
        atomic_write_json(self.state_path, self.state)

    def flush(self) -> None:
        if not self.pending:
            return
        # Recorded first: a process killed between the two loses these rows rather than sending them twice.
        self._record(sent_through_step=self.pending[-1][0])
        for step, values in self.pending:
            self.run.log(values, step=step)
        self.pending = []

    def final(self, step: int, values: dict[str, float]) -> None:
        self.flush()
        if self.state["final_metrics_sent"]:
            return
        self._record(final_metrics_sent=True)
        self.run.log(values, step=step)  # joins the last training step's row
        self.run.summary.update(values)

    def close(self, error: BaseException | None) -> None:
        self.flush()
        if isinstance(error, Preempted):
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if error is None else 1)


class ScalarTracker:
    """The scalars of one run for every logger ``runtime.logger`` names; a no-op on other ranks and with
    ``none``. Use it as a context manager around training and evaluation; ``start`` opens the loggers once
    the step a resumed run continues from is known."""

    def __init__(self, config: RunConfig, run_dir: Path, info: DistInfo, provenance: dict[str, Any]):
        self.names = logger_choices(config.runtime.logger) if info.is_main else []
        self.config, self.run_dir, self.provenance = config, Path(run_dir), provenance
        self.sinks: list[_TensorBoard | _WandB] = []

    def start(self, resumed_from: int | None) -> None:
        if "tensorboard" in self.names:
            self.sinks.append(_TensorBoard(self.run_dir, resumed_from))
        if "wandb" in self.names:
            self.sinks.append(_WandB(self.config, self.run_dir, self.provenance))

    def after_step(self, step: int, loss: float, model: nn.Module, optimizer: torch.optim.Optimizer,
                   window: LogWindow | None) -> None:
        """Record a finished step; ``window`` is given on log steps (the step line's throughput)."""
        if not self.sinks:
            return
        scalars = {"train/loss": loss}
        if window is not None:
            scalars.update({
                "train/lr": optimizer.param_groups[0]["lr"],
                "train/images_per_s": window.images_per_s,
                "train/data_wait_fraction": min(1.0, window.data_wait_fraction),
                "train/input_fraction": min(1.0, window.input_fraction),
                "train/grad_norm": gradient_norm(model),
            })
            logit_scale = getattr(getattr(model, "module", model), "logit_scale", None)
            if logit_scale is not None:
                scalars["train/logit_scale"] = float(logit_scale.detach().exp())
        for sink in self.sinks:
            sink.scalars(step, scalars, group_ends=window is not None)

    def flush(self) -> None:
        """Before a checkpoint: every step up to it reaches the loggers first."""
        for sink in self.sinks:
            sink.flush()

    def final_metrics(self, step: int, metrics: dict[str, Any]) -> None:
        """The evaluation metrics as ``eval/<evaluation>/<metric>`` scalars at the last training step."""
        values = _numeric_leaves(metrics, "eval/")
        for sink in self.sinks:
            sink.final(step, values)

    def __enter__(self) -> ScalarTracker:
        return self

    def __exit__(self, exc_type, error, traceback) -> None:
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close(error)
