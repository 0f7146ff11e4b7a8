"""The pretraining loop: one method, one dataset, resumable at any step, and free of host syncs between
log steps.

A step only launches work: the batch it trains on was moved and augmented while the previous step ran
(``DevicePrefetcher``: on a GPU on its own CUDA stream), its loss stays on the device, and nothing reads a
device value back. The ranks compare notes only at *sync points*: every ``runtime.log_every_steps`` steps,
the last step, and the steps that checkpoint by count or at an epoch's end, all of which every rank knows
in advance. There one all_reduce carries the window's losses and each rank's stop and checkpoint-due
flags; the losses are checked (a non-finite one fails the run, naming its step, before any checkpoint
could save it), logged and written to TensorBoard, and a checkpoint is taken when one is due. A signal
makes a sync point soon, not at the next log step (SLURM kills a job some 30 s after SIGTERM): a single
process stops after the current step; with several ranks, the signalled one proposes a stop step in the
rendezvous store, which every rank reads after each step (a store read, not a device sync).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, IterableDataset

from xsample.config import RunConfig
from xsample.data import root_dataset
from xsample.losses.distributed import equal_local_batches
from xsample.rundir.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from xsample.rundir.preemption import PreemptionGuard, leave_preemption_to_the_main_process
from xsample.train.components import TrainingSetup
from xsample.train.distributed import (
    DistInfo,
    agreed_stop,
    announce_stop,
    barrier,
    gather_objects,
    sum_over_ranks,
)
from xsample.train.global_batchnorm import convert_batchnorm_for_distributed
from xsample.train.sampling import ResumableDistributedSampler, SeededViewsDataset, StreamedViews
from xsample.train.skipped import SkippedSamples
from xsample.train.tracking import LogWindow, ScalarTracker


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
    data_wait_seconds: float  # part of train_seconds blocked on the DataLoader (the workers were behind)
    input_seconds: float = 0.0  # preparing batches on the training device (decode, views): CUDA-event time on GPU
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    samples_skipped: int = 0
    steady_images_per_s: float = 0.0  # after this attempt's first log window (start-up excluded)
    left_for_requeue: bool = False  # a rank other than 0 stopped for a scheduler's requeue; nothing to evaluate

    @property
    def images_per_s(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def data_wait_fraction(self) -> float:
        return self.data_wait_seconds / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def input_fraction(self) -> float:
        """On-device input time over train time; with the input on its own stream it may overlap the step."""
        return self.input_seconds / self.train_seconds if self.train_seconds > 0 else 0.0


def autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def train_step(setup: TrainingSetup, trained: nn.Module, batch: dict, optimizer, scheduler, scaler,
               device: torch.device, precision: str) -> torch.Tensor:
    """One optimisation step on a batch already on the device; its loss stays there (no host sync)."""
    with autocast(device, precision):
        loss = setup.compute_loss(trained, batch, device)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss


def _on_stream(value: Any, stream: torch.cuda.Stream) -> None:
    """Tell the caching allocator that ``stream`` uses the batch's tensors made on another stream."""
    if isinstance(value, torch.Tensor) and value.is_cuda:
        value.record_stream(stream)
    elif isinstance(value, dict):
        for item in value.values():
            _on_stream(item, stream)


class DevicePrefetcher:
    """The loader's batches on the training device, one batch ahead: ``prepare_next`` (called right after
    a step is launched) fetches the next batch and runs ``views.on_device`` on it, on a side CUDA stream on
    a GPU, so its decoding and augmentation overlap the step; ``take`` hands it over.

    It times the two parts of the input: ``loader_wait`` (host seconds blocked on the DataLoader) and the
    on-device preparation (CUDA events on GPU, read only once they completed, so timing never syncs)."""

    def __init__(self, loader: DataLoader, views, device: torch.device):
        self.iterator: Iterator[dict] = iter(loader)
        self.views, self.device = views, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.loader_wait = 0.0
        self.input_seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._next: dict | None = None
        self.prepare_next()

    def prepare_next(self) -> None:
        started = time.perf_counter()
        raw = next(self.iterator, None)
        self.loader_wait += time.perf_counter() - started
        if raw is None:
            self._next = None
            return
        if self.stream is None:
            started = time.perf_counter()
            self._next = self.views.on_device(raw, self.device)
            self.input_seconds += time.perf_counter() - started
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self.stream):
            start.record()
            self._next = self.views.on_device(raw, self.device)
            end.record()
        self._events.append((start, end))

    def take(self) -> dict | None:
        """The prepared batch (None when the loader is exhausted), safe to use on the current stream."""
        batch = self._next
        if batch is not None and self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            _on_stream(batch, current)
        return batch

    def harvest(self, wait: bool = False) -> None:
        """Add the on-device times of the preparations that completed (all of them with ``wait``)."""
        pending = []
        for start, end in self._events:
            if wait:
                end.synchronize()
            if end.query():
                self.input_seconds += start.elapsed_time(end) / 1000
            else:
                pending.append((start, end))
        self._events = pending


class Logger:
    """The step line at log steps: loss, lr, throughput and the input's share of the window's wall time."""

    def __init__(self, info: DistInfo, total_steps: int, global_batch: int):
        self.info = info
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.window_start = time.perf_counter()
        self.window_first_step = None
        self.window_wait = self.window_input = 0.0
        self.steady_samples, self.steady_seconds, self.windows = 0, 0.0, 0

    def __call__(self, message: str) -> None:
        if self.info.is_main:
            print(message, flush=True)

    def start(self, step: int, wait: float, input_seconds: float) -> None:
        """A window begins after ``step`` with these cumulative input times."""
        self.window_start, self.window_first_step = time.perf_counter(), step
        self.window_wait, self.window_input = wait, input_seconds

    def window(self, step: int, loss: float, lr: float, wait: float, input_seconds: float) -> LogWindow:
        """Print the step line for the window ending at ``step``; its throughput."""
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        steps = step - self.window_first_step
        window = LogWindow(steps * self.global_batch / elapsed, (wait - self.window_wait) / elapsed,
                           (input_seconds - self.window_input) / elapsed)
        self.windows += 1
        if self.windows > 1:
            self.steady_samples += steps * self.global_batch
            self.steady_seconds += elapsed
        eta = (self.total_steps - step) * elapsed / max(steps, 1)
        self(f"step {step}/{self.total_steps}  loss {loss:.4f}  lr {lr:.3g}  {window.images_per_s:.0f} img/s  "
             f"data wait {window.data_wait_fraction:.0%}  input {window.input_fraction:.0%}  ETA {eta / 60:.1f} min")
        self.start(step, wait, input_seconds)
        return window

    def steady_images_per_s(self, fallback: float) -> float:
        return self.steady_samples / self.steady_seconds if self.steady_seconds > 0 else fallback


def pretrain(config: RunConfig, run_dir: Path, info: DistInfo, setup: TrainingSetup,
             config_hash: str, tracker: ScalarTracker, on_checkpoint: Callable[[int], None] | None = None,
             on_log: Callable[[int], None] | None = None, progress=None,
             step_probe: Callable[[int], AbstractContextManager] | None = None) -> TrainOutcome:
    """Train ``setup.model`` with ``setup.loss``; resumes from ``run_dir`` when a checkpoint exists.
    ``tracker`` (not started yet) receives the step scalars; ``on_checkpoint(step)`` follows every
    checkpoint, ``on_log(step)`` every logged step (main rank); ``progress.step`` follows the last finished
    step; ``step_probe(step)`` wraps each step that makes ``step`` (instrumentation: experiments/gpu_check.py,
    the host-sync test)."""
    optim, runtime = config.optim, config.runtime
    world, device = info.world_size, info.device
    global_batch = optim.batch_size
    if global_batch % world:
        raise ValueError(f"optim.batch_size={global_batch} is not divisible by the world size {world}")
    local_batch = global_batch // world

    streaming = isinstance(setup.train_dataset, IterableDataset)
    if streaming:
        views = StreamedViews(setup.train_dataset, setup.views, seed=config.seed)
        sampler = None
        steps_per_epoch = len(setup.train_dataset) // global_batch
        if steps_per_epoch == 0:
            raise ValueError(f"optim.batch_size={global_batch} is larger than the dataset ({len(setup.train_dataset)} samples)")
    else:
        views = SeededViewsDataset(setup.train_dataset, setup.views, seed=config.seed)
        sampler = ResumableDistributedSampler(
            len(views), batch_size_per_rank=local_batch, rank=info.rank, world_size=world, seed=config.seed
        )
        steps_per_epoch = sampler.batches_per_epoch
    # budget=steps: the optimiser steps (and schedule) of `epochs` passes over the whole training set, whatever
    # fraction of it this run trains on (data scarcity without less compute); epochs: passes over this run's data.
    budget_epoch_steps = (steps_per_epoch if optim.budget == "epochs"
                          else len(root_dataset(setup.train_dataset)) // global_batch)
    total_steps = budget_epoch_steps * optim.epochs

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
    model = setup.model.to(device).to(memory_format=torch.channels_last)
    if world > 1:
        model = convert_batchnorm_for_distributed(model, device)
    optimizer, scheduler = setup.make_optimizer(model, budget_epoch_steps, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.precision == "fp16")

    state = load_checkpoint(run_dir, config_hash)
    step, resumed_from, samples_seen, train_seconds, history = 0, None, 0, 0.0, []
    data_wait_seconds = input_seconds = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rank_rng = state.get("rank_rng")  # every rank's RNG; checkpoints before it held rank 0's only
        restore_rng_state(rank_rng[info.rank] if rank_rng and len(rank_rng) == world else state["rng"])
        step, samples_seen = state["step"], state["samples_seen"]
        train_seconds, history = state["train_seconds"], state["loss_history"]
        data_wait_seconds = state.get("data_wait_seconds", 0.0)
        input_seconds = state.get("input_seconds", 0.0)
        resumed_from = step
        previous_augment = state.get("augment", setup.views.name)
    last_checkpoint_step = resumed_from
    skipped = SkippedSamples(setup.train_dataset, len(setup.train_dataset),
                             float(runtime.max_skipped_fraction),
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

    every_steps = int(runtime.checkpoint_every_steps or 0)
    every_seconds = 60.0 * float(runtime.checkpoint_every_minutes or 0)
    loader_workers = int(runtime.num_workers)
    log_every = int(runtime.log_every_steps)
    precision = runtime.precision

    def checkpoint_by_count(at: int) -> bool:
        """Checkpoint steps every rank knows in advance: every ``every_steps``, each epoch's end and the last
        step (budget=steps can end mid-epoch; a fine-tuning run starts there)."""
        return bool(every_steps and at % every_steps == 0) or at % steps_per_epoch == 0 or at >= total_steps

    def checkpoint(current_step: int) -> None:
        """Every rank's state into rank 0's checkpoint (a collective: only at sync points)."""
        nonlocal last_checkpoint_step, checkpoint_clock
        positions = skipped.gather(info)
        rank_rng = gather_objects(rng_state(), info)
        if info.is_main:
            tracker.flush()  # every event up to the checkpoint is on disk before the checkpoint is
            save_checkpoint(run_dir, {
                "config_hash": config_hash, "step": current_step, "samples_seen": samples_seen,
                "train_seconds": train_seconds, "data_wait_seconds": data_wait_seconds,
                "input_seconds": input_seconds, "loss_history": history, "augment": setup.views.name,
                "skipped_positions": sorted(positions), "rank_rng": rank_rng,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            })
            if on_checkpoint is not None:
                on_checkpoint(current_step)
        last_checkpoint_step, checkpoint_clock = current_step, time.monotonic()

    checkpoint_clock = time.monotonic()
    window_losses: list[torch.Tensor] = []  # this window's per-step local losses, still on the device
    window_first = step
    prefetcher: DevicePrefetcher | None = None
    waits_before = (data_wait_seconds, input_seconds)  # what earlier loaders contributed to the totals

    def input_totals() -> tuple[float, float]:
        return (waits_before[0] + prefetcher.loader_wait, waits_before[1] + prefetcher.input_seconds)

    def sync_point(current_step: int, guard: PreemptionGuard) -> bool:
        """Read the window's losses and agree on stopping and checkpointing (see the module docstring);
        whether the ranks stop here."""
        nonlocal window_losses, window_first, data_wait_seconds, input_seconds
        time_due = bool(every_seconds and time.monotonic() - checkpoint_clock >= every_seconds)
        flags = torch.tensor([float(guard.requested), float(time_due)], device=device)
        values = sum_over_ranks(torch.cat([torch.stack(window_losses).float().reshape(-1), flags]), info).tolist()
        losses = [value / world for value in values[:-2]]
        stop, any_time_due = values[-2] > 0, values[-1] > 0
        pairs = list(zip(range(window_first + 1, current_step + 1), losses, strict=True))
        for at, value in pairs:
            if not math.isfinite(value):
                raise NonFiniteLossError(at, value, last_checkpoint_step)
        history.extend(pairs)
        window_losses, window_first = [], current_step
        prefetcher.harvest()
        data_wait_seconds, input_seconds = input_totals()
        window = None
        if current_step % log_every == 0 or current_step == total_steps:
            window = log.window(current_step, losses[-1], optimizer.param_groups[0]["lr"], data_wait_seconds,
                                input_seconds)
            if on_log is not None and info.is_main:
                on_log(current_step)
        for at, value in pairs:
            tracker.after_step(at, value, trained, optimizer, window if at == current_step else None)
        skipped.check(info, samples_seen)
        if stop or any_time_due or checkpoint_by_count(current_step):
            checkpoint(current_step)
        return stop

    stop_proposed, stop_at = False, None
    with PreemptionGuard() as guard, equal_local_batches(local_batch, device, info.grouped):
        trained.train()
        log.start(step, data_wait_seconds, input_seconds)
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
            if prefetcher is not None:  # a stream that ran out early: keep what its loader took
                prefetcher.harvest(wait=True)
                waits_before = input_totals()
            tick = time.perf_counter()
            prefetcher = DevicePrefetcher(loader, setup.views, device)
            # A stream may run out early (workers drop their partial batches): the loop then restarts it.
            for _ in range(steps_per_epoch - batch_in_epoch):
                with step_probe(step + 1) if step_probe is not None else nullcontext():
                    batch = prefetcher.take()
                    if batch is None:
                        break
                    loss = train_step(setup, trained, batch, optimizer, scheduler, scaler, device, precision)
                    prefetcher.prepare_next()  # the next batch's input overlaps this step on the device
                    window_losses.append(loss.detach())
                    skipped.add(batch["skipped"])
                    step += 1
                    samples_seen += global_batch
                    now = time.perf_counter()
                    train_seconds, tick = train_seconds + now - tick, now
                    if progress is not None:
                        progress.step = step
                    if world > 1:
                        if guard.requested and not stop_proposed:
                            announce_stop(info, step)
                            stop_proposed = True
                        stop_at = stop_at if stop_at is not None else agreed_stop(info)
                    signalled = guard.requested if world == 1 else step == stop_at
                    stop = False
                    if step % log_every == 0 or step == total_steps or checkpoint_by_count(step) or signalled:
                        stop = sync_point(step, guard)
                if stop:
                    barrier(info)  # the checkpoint is on disk before any rank hands over
                    log(f"signal received: checkpoint saved at step {step}, handing over")
                    guard.hand_over(info.is_main, step)
                    return _outcome(model, resumed_from, step, samples_seen, train_seconds, data_wait_seconds,
                                    input_seconds, history, 0, log, left_for_requeue=True)
                if step >= total_steps:
                    break
        if prefetcher is not None:  # None when resumed at the last step
            prefetcher.harvest(wait=True)
            data_wait_seconds, input_seconds = input_totals()
    return _outcome(model, resumed_from, step, samples_seen, train_seconds, data_wait_seconds, input_seconds,
                    history, skipped.check(info, samples_seen), log)


def _outcome(model, resumed_from, step, samples_seen, train_seconds, data_wait_seconds, input_seconds, history,
             samples_skipped, log: Logger, left_for_requeue: bool = False) -> TrainOutcome:
    overall = samples_seen / train_seconds if train_seconds > 0 else 0.0
    return TrainOutcome(model=model, resumed_from=resumed_from, steps=step, samples_seen=samples_seen,
                        train_seconds=train_seconds, data_wait_seconds=data_wait_seconds, input_seconds=input_seconds,
                        loss_history=history, samples_skipped=samples_skipped,
                        steady_images_per_s=log.steady_images_per_s(overall), left_for_requeue=left_for_requeue)
