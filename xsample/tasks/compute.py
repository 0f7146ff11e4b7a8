"""Section 4.5 analog: per-step cost of each method on the same backbone and batch, in one process,
interleaved in rounds so that machine drift affects every method alike.

The batch is what one GPU holds in training: the global batch (``optim.batch_size``) over the training
job's ranks (``compute.training_ranks``: the scale's nodes x tasks per node, one task per GPU), not over
this timing job's own (one GPU)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from xsample.config import RunConfig
from xsample.methods import method as registered_method
from xsample.train.components import build_loss_fn, build_model, build_train_dataset
from xsample.train.sampling import SeededViewsDataset
from xsample.views.pil import PILViews, training_augmentation
from xsample.views.recipe import AugmentRecipe


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_gpu_batch(config: RunConfig) -> tuple[int, int]:
    """(global batch, the batch one rank of the training job holds)."""
    global_batch = config.optim.batch_size
    ranks = config.compute.training_ranks
    if global_batch % ranks:
        raise ValueError(f"optim.batch_size={global_batch} is not divisible by the training job's {ranks} ranks "
                         "(scale.resources: nodes x tasks_per_node)")
    return global_batch, global_batch // ranks


def compute_overhead_metrics(config: RunConfig, device: torch.device) -> dict[str, Any]:
    spec = config.compute
    dataset = build_train_dataset(config)
    augmentation = training_augmentation(AugmentRecipe.of(config.augment),
                                         config.data.image_size)
    views = SeededViewsDataset(dataset, PILViews(augmentation, num_views=2), seed=config.seed)
    global_batch, batch_size = per_gpu_batch(config)
    batch = next(iter(DataLoader(views, batch_size=batch_size, shuffle=True)))

    contenders: dict[str, tuple] = {}
    metrics: dict[str, Any] = {}
    for name in spec.methods:
        method_config = dataclasses.replace(config, method=spec.method_configs[name])
        model = build_model(method_config).to(device)
        loss_fn, graph_seconds = build_loss_fn(method_config, dataset, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        contenders[name] = (model, loss_fn, optimizer)
        if registered_method(name).uses_graph:
            metrics["graph_precompute_s"] = round(graph_seconds, 4)
            metrics["graph_precompute_samples"] = len(dataset)

    def step(name: str) -> float:
        model, loss_fn, optimizer = contenders[name]
        _sync(device)
        started = time.perf_counter()
        loss = loss_fn(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - started

    for name in contenders:
        for _ in range(spec.warmup_steps):
            step(name)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    peak: dict[str, float | None] = {}
    for _ in range(spec.timed_steps):
        for name in contenders:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(step(name))
            if device.type == "cuda":
                peak[name] = max(peak.get(name) or 0.0, torch.cuda.max_memory_allocated(device) / 2**20)
    for name, samples in times.items():
        median = statistics.median(samples)
        metrics[name] = {"step_ms": round(1000 * median, 3), "images_per_s": round(batch_size / median, 1),
                         # CPU allocations are not tracked per method: memory is reported on GPU only.
                         "peak_mem_mb": round(peak[name], 1) if name in peak else None}
    overhead, against = spec.overhead.method, spec.overhead.against
    if overhead in metrics and against in metrics:
        metrics[f"{overhead}_over_{against}"] = round(metrics[overhead]["step_ms"] / metrics[against]["step_ms"], 4)
        metrics["overhead_against"] = against
    metrics["batch_size"] = batch_size  # per GPU, as measured
    metrics["global_batch_size"] = global_batch
    metrics["backbone"] = config.model.backbone
    return metrics
