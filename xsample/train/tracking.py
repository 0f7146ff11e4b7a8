"""Training curves for TensorBoard: event files in the run directory, written by the main rank only.

Every step writes ``train/loss`` (the loop hands them over in windows, at its sync points); every
``runtime.log_every_steps`` steps (and the last) also the learning rate, images/s, the fractions of wall
time spent waiting for the data loader and preparing batches on the device, the gradient norm and, for
CLIP, the logit scale. The final evaluation metrics go under ``eval/``. A resumed run hides the events a
killed process wrote after its last checkpoint (TensorBoard's purge step), so its curves continue without
duplicated steps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from xsample.train.distributed import DistInfo

LOGGERS = ("tensorboard", "none")


def logger_problem(config: dict[str, Any]) -> str | None:
    """The line that says ``runtime.logger`` is not one of LOGGERS, or None."""
    choice = (config.get("runtime") or {}).get("logger", "tensorboard")
    return None if choice in LOGGERS else f"runtime.logger={choice!r} is not supported; choose one of {', '.join(LOGGERS)}"


def logger_choice(config: dict[str, Any]) -> str:
    """``runtime.logger``, checked: "tensorboard" (default) or "none"."""
    problem = logger_problem(config)
    if problem is not None:
        raise ValueError(problem)
    return config.get("runtime", {}).get("logger", "tensorboard")


def _event_writer(config: dict[str, Any], run_dir: Path, info: DistInfo, purge_step: int | None = None):
    if not info.is_main or logger_choice(config) == "none":
        return None
    # Imported here: tensorboard (protobuf, grpc) costs a second and is not needed with logger=none.
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir), purge_step=purge_step)


def gradient_norm(model: nn.Module) -> float:
    """L2 norm over all parameter gradients (after the optimiser step they are unscaled, also under fp16)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class LogWindow(NamedTuple):
    """Throughput over the steps since the previous log step, as the step line prints it."""
    images_per_s: float
    data_wait_fraction: float  # of the window's wall time spent blocked on the data loader
    input_fraction: float = 0.0  # of the window's wall time spent preparing batches on the device (may overlap)


class ScalarTracker:
    """Per-step scalars of one training process; a no-op on other ranks and with ``runtime.logger=none``."""

    def __init__(self, config: dict[str, Any], run_dir: Path, info: DistInfo, resumed_from: int | None):
        # Steps up to the checkpoint are on disk (flushed before each checkpoint); later ones belong to a
        # process that died after it and are hidden, because this run writes them again.
        self.writer = _event_writer(config, run_dir, info, purge_step=(resumed_from or 0) + 1)

    def after_step(self, step: int, loss: float, model: nn.Module, optimizer: torch.optim.Optimizer,
                   window: LogWindow | None) -> None:
        """Record a finished step; ``window`` is given on log steps (the step line's throughput)."""
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, step)
        if window is None:
            return
        scalars = {
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/images_per_s": window.images_per_s,
            "train/data_wait_fraction": min(1.0, window.data_wait_fraction),
            "train/input_fraction": min(1.0, window.input_fraction),
            "train/grad_norm": gradient_norm(model),
        }
        logit_scale = getattr(getattr(model, "module", model), "logit_scale", None)
        if logit_scale is not None:
            scalars["train/logit_scale"] = float(logit_scale.detach().exp())
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def __enter__(self) -> ScalarTracker:
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()


def _numeric_leaves(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    leaves = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            leaves.update(_numeric_leaves(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            leaves[f"{prefix}{key}"] = float(value)
    return leaves


def write_final_metrics(config: dict[str, Any], run_dir: Path, info: DistInfo, step: int,
                        metrics: dict[str, Any]) -> None:
    """The evaluation metrics as ``eval/<evaluation>/<metric>`` scalars at the last training step."""
    writer = _event_writer(config, run_dir, info)
    if writer is None:
        return
    with writer:
        for tag, value in _numeric_leaves(metrics, "eval/").items():
            writer.add_scalar(tag, value, step)
