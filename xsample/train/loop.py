"""The pretraining loop: one method, one dataset, resumable at any step."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset

from xsample.data import root_dataset
from xsample.train.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from xsample.train.components import TrainingSetup
from xsample.train.distributed import DistInfo, all_ranks_true, mean_over_ranks
from xsample.train.global_batchnorm import convert_batchnorm_for_distributed
from xsample.train.preemption import PreemptionGuard, leave_preemption_to_the_main_process
from xsample.train.sampling import ResumableDistributedSampler, SeededViewsDataset, StreamedViews
from xsample.train.skipped import SkippedSamples
from xsample.train.tracking import LogWindow, ScalarTracker

DEFAULT_MAX_SKIPPED_FRACTION = 0.001


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, value: float, checkpoint_step: int | None):
        kept = f"the last good checkpoint (step {checkpoint_step}) is kept" if checkpoint_step is not None else "no checkpoint was written yet"
        super().__init__(
            f"loss became {value} at step {step}; {kept}. Lower optim.lr, check the data, or use runtime.precision=fp32."
        )
        self.step = step


@dataclass
class TrainOutcome:
    model: nn.Module
    resumed_from: int | None
    steps: int
    samples_seen: int
    train_seconds: float
    data_wait_seconds: float  # part of train_seconds spent blocked on the DataLoader
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    samples_skipped: int = 0

    @property
    def images_per_s(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def data_wait_fraction(self) -> float:
        return self.data_wait_seconds / self.train_seconds if self.train_seconds > 0 else 0.0


def _autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


class Logger:
    def __init__(self, info: DistInfo, total_steps: int, global_batch: int):
        self.info = info
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.window_start = time.perf_counter()
        self.window_steps = 0
        self.window_wait = 0.0

    def __call__(self, message: str) -> None:
        if self.info.is_main:
            print(message, flush=True)

    def step(self, step: int, loss: float, lr: float, every: int, data_wait: float) -> LogWindow | None:
        """Print the step's line every ``every`` steps and at the end; its throughput window when it printed."""
        self.window_steps += 1
        self.window_wait += data_wait
        if step % every and step != self.total_steps:
            return None
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        window = LogWindow(self.window_steps * self.global_batch / elapsed, self.window_wait / elapsed)
        eta = (self.total_steps - step) * elapsed / max(self.window_steps, 1)
        self(f"step {step}/{self.total_steps}  loss {loss:.4f}  lr {lr:.3g}  {window.images_per_s:.0f} img/s  "
             f"data wait {window.data_wait_fraction:.0%}  ETA {eta / 60:.1f} min")
        self.window_start, self.window_steps, self.window_wait = time.perf_counter(), 0, 0.0
        return window


def pretrain(config: dict[str, Any], run_dir: Path, info: DistInfo, setup: TrainingSetup,
             config_hash: str, tracker: ScalarTracker, on_checkpoint: Callable[[int], None] | None = None,
             on_log: Callable[[int], None] | None = None) -> TrainOutcome:
    """Train ``setup.model`` with ``setup.loss``; resumes from ``run_dir`` when a checkpoint exists.
    ``tracker`` (not started yet) receives the step scalars; ``on_checkpoint(step)`` follows every
    checkpoint, ``on_log(step)`` every logged step (main rank)."""
    optim_cfg, runtime = config["optim"], config["runtime"]
    world, device = info.world_size, info.device
    global_batch = int(optim_cfg["batch_size"])
    if global_batch % world:
        raise ValueError(f"optim.batch_size={global_batch} is not divisible by the world size {world}")
    local_batch = global_batch // world

    streaming = isinstance(setup.train_dataset, IterableDataset)
    if streaming:
        views = StreamedViews(setup.train_dataset, setup.views, seed=config["seed"])
        sampler = None
        steps_per_epoch = len(setup.train_dataset) // global_batch
        if steps_per_epoch == 0:
            raise ValueError(f"optim.batch_size={global_batch} is larger than the dataset ({len(setup.train_dataset)} samples)")
    else:
        views = SeededViewsDataset(setup.train_dataset, setup.views, seed=config["seed"])
        sampler = ResumableDistributedSampler(
            len(views), batch_size_per_rank=local_batch, rank=info.rank, world_size=world, seed=config["seed"]
        )
        steps_per_epoch = sampler.batches_per_epoch
    # budget=steps: the optimiser steps (and schedule) of `epochs` passes over the whole training set, whatever
    # fraction of it this run trains on (data scarcity without less compute); epochs: passes over this run's data.
    budget_epoch_steps = (steps_per_epoch if optim_cfg["budget"] == "epochs"
                          else len(root_dataset(setup.train_dataset)) // global_batch)
    total_steps = budget_epoch_steps * int(optim_cfg["epochs"])

    model = setup.model.to(device).to(memory_format=torch.channels_last)
    if world > 1:
        model = convert_batchnorm_for_distributed(model, device)
    optimizer, scheduler = setup.make_optimizer(model, budget_epoch_steps, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.get("precision") == "fp16")

    state = load_checkpoint(run_dir, config_hash)
    step, resumed_from, samples_seen, train_seconds, data_wait_seconds, history = 0, None, 0, 0.0, 0.0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        step, samples_seen = state["step"], state["samples_seen"]
        train_seconds, history = state["train_seconds"], state["loss_history"]
        data_wait_seconds = state.get("data_wait_seconds", 0.0)
        resumed_from = step
        previous_augment = state.get("augment", setup.views.name)
    last_checkpoint_step = resumed_from
    skipped = SkippedSamples(setup.train_dataset, len(setup.train_dataset),
                             float(runtime.get("max_skipped_fraction", DEFAULT_MAX_SKIPPED_FRACTION)),
                             positions=(state or {}).get("skipped_positions", ()))

    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    # Started before the step line's logger: its first window does not count the loggers' start-up.
    tracker.start(resumed_from)
    log = Logger(info, total_steps, global_batch)
    if resumed_from is not None:
        log(f"resumed from step {resumed_from} ({run_dir})")
        if previous_augment != setup.views.name:
            log(f"note: steps up to {resumed_from} drew their views with runtime.augment={previous_augment}, the rest "
                f"with {setup.views.name}: same augmentation laws, but not the views an uninterrupted run would draw")

    def checkpoint(current_step: int) -> None:
        nonlocal last_checkpoint_step, checkpoint_clock
        if info.is_main:
            tracker.flush()  # every event up to the checkpoint is on disk before the checkpoint is
            save_checkpoint(run_dir, {
                "config_hash": config_hash, "step": current_step, "samples_seen": samples_seen,
                "train_seconds": train_seconds, "data_wait_seconds": data_wait_seconds, "loss_history": history,
                "augment": setup.views.name,
                # Rank 0's positions plus the other ranks' as of the last log step (gathered there, not here:
                # a time-based checkpoint is not a step all ranks reach together).
                "skipped_positions": sorted(skipped.positions),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            })
            if on_checkpoint is not None:
                on_checkpoint(current_step)
        last_checkpoint_step, checkpoint_clock = current_step, time.monotonic()

    every_steps = int(runtime.get("checkpoint_every_steps") or 0)
    every_seconds = 60.0 * float(runtime.get("checkpoint_every_minutes") or 0)
    checkpoint_clock = time.monotonic()
    loader_workers = int(runtime.get("num_workers", 0))
    log_every = int(runtime.get("log_every_steps", 10))

    with PreemptionGuard() as guard:
        trained.train()
        while step < total_steps:
            epoch, batch_in_epoch = divmod(step, steps_per_epoch)
            if streaming:
                views.restart_at(step)
            else:
                sampler.set_position(epoch, batch_in_epoch)
            loader = DataLoader(
                views, batch_size=local_batch, sampler=sampler, num_workers=loader_workers,
                pin_memory=device.type == "cuda", drop_last=True, persistent_workers=False,
                collate_fn=setup.views.collate, worker_init_fn=leave_preemption_to_the_main_process,
            )
            tick = fetch_started = time.perf_counter()
            # A stream may run out early (workers drop their partial batches): the loop then restarts it.
            for batch in itertools.islice(loader, steps_per_epoch - batch_in_epoch):
                data_wait = time.perf_counter() - fetch_started
                batch = setup.views.on_device(batch, device)
                with _autocast(device, runtime.get("precision", "auto")):
                    loss = setup.compute_loss(trained, batch, device)
                global_loss = mean_over_ranks(loss, info)
                if not math.isfinite(global_loss):
                    raise NonFiniteLossError(step + 1, global_loss, last_checkpoint_step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                samples_seen += global_batch
                now = time.perf_counter()
                train_seconds, tick = train_seconds + now - tick, now
                data_wait_seconds += data_wait
                history.append((step, global_loss))
                skipped.add(batch.get("skipped"))
                window = log.step(step, history[-1][1], optimizer.param_groups[0]["lr"], log_every, data_wait)
                if window is not None and on_log is not None and info.is_main:
                    on_log(step)
                tracker.after_step(step, global_loss, trained, optimizer, window)
                if step % log_every == 0:
                    skipped.check(info, samples_seen)

                stop = not all_ranks_true(not guard.requested, info)
                due = (every_steps and step % every_steps == 0) or (
                    every_seconds and time.monotonic() - checkpoint_clock >= every_seconds
                )
                # Every epoch's end and the last step (budget=steps can end mid-epoch; a fine-tuning run starts there).
                if stop or due or step % steps_per_epoch == 0 or step >= total_steps:
                    checkpoint(step)
                fetch_started = time.perf_counter()
                if stop:
                    log(f"signal received: checkpoint saved at step {step}, handing over to the scheduler")
                    guard.hand_over()
                if step >= total_steps:
                    break
    return TrainOutcome(model=model, resumed_from=resumed_from, steps=step, samples_seen=samples_seen,
                        train_seconds=train_seconds, data_wait_seconds=data_wait_seconds, loss_history=history,
                        samples_skipped=skipped.check(info, samples_seen))

