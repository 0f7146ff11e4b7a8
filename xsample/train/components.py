"""Turns a resolved config into the pieces the loop needs: data, model, loss, side information."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from xsample import losses
from xsample.config import Optim, RunConfig
from xsample.data import build_dataset, class_balanced_subset, root_dataset
from xsample.graph.diagnostics import GraphDiagnostics
from xsample.losses.distributed import gather_without_grad
from xsample.methods import method as registered_method
from xsample.models import CLIPModel, ContrastiveModel, PixelFeatures, ProjectionHead, build_backbone
from xsample.train.optim import build_optimizer, cosine_schedule_with_warmup
from xsample.train.sanity import with_sanity
from xsample.train.side_information import build_side_information
from xsample.views.batched import BatchedViews
from xsample.views.pil import PILViews, eval_transform, training_augmentation
from xsample.views.recipe import AugmentRecipe


@dataclass
class TrainingSetup:
    model: nn.Module
    train_dataset: Dataset
    views: PILViews | BatchedViews  # draws the training views: in workers (pil) or on the device (batched)
    compute_loss: Callable[[nn.Module, dict, torch.device], torch.Tensor] | None  # None: a baseline, nothing trains
    make_optimizer: Callable[[nn.Module, int, int], tuple]
    graph_seconds: float  # time spent precomputing the X-CLR side information
    graph_diagnostics: GraphDiagnostics | None  # X-CLR: its target's shares over the first batches it trains on


def lr_for(optim: Optim) -> float:
    """Base lr, linearly scaled by global batch / 256 when optim.lr_scaling == 'linear'."""
    lr = float(optim.lr)
    if optim.lr_scaling == "linear":
        lr *= optim.batch_size / 256.0
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"optim.lr must be a positive number, got {optim.lr}")
    return lr


def build_train_dataset(config: RunConfig) -> Dataset:
    """The run's training set: its seeded class-balanced fraction (data.fraction, checked when the config was
    parsed), with the sanity check's corruption when the run is one."""
    data = config.data
    dataset = build_dataset(data.name, "train", root=data.root, **data.options)
    if data.fraction < 1:
        dataset = class_balanced_subset(dataset, data.fraction, seed=config.seed)
    return with_sanity(dataset, config.sanity)


def build_views(config: RunConfig, dataset: Dataset, num_views: int,
                device: torch.device) -> PILViews | BatchedViews:
    """The views of the run's augmentation recipe (``augment``) on the path ``runtime.augment`` names (auto:
    batched). On the batched path a dataset of image files reads them undecoded, to be decoded in workers,
    or in batches on the GPU; the views are drawn on the GPU, or in the workers when training on the CPU
    (in parallel with the step)."""
    image_size = config.data.image_size
    # Baselines draw no training views (their run has no recipe): their dataset keeps handing decoded
    # images to the BatchNorm pass, which uses the evaluation transform.
    if not registered_method(config.method.name).trains:
        return PILViews(eval_transform(image_size), num_views)
    recipe = AugmentRecipe.of(config.augment)
    if config.runtime.augment == "pil":
        return PILViews(training_augmentation(recipe, image_size), num_views)
    root = root_dataset(dataset)
    encoded = callable(getattr(root, "keep_images_encoded", None))
    if encoded:
        root.keep_images_encoded()
    on_gpu = device.type == "cuda"
    return BatchedViews(image_size, num_views, recipe, encoded_source=encoded, decode_on_device=encoded and on_gpu,
                        augment_in_workers=not on_gpu)


def build_model(config: RunConfig) -> nn.Module:
    model, kind = config.model, registered_method(config.method.name).model
    if kind == "pixels":
        return PixelFeatures(config.method.max_side)
    backbone, feature_dim = build_backbone(model.backbone, small_image_stem=model.small_image_stem,
                                           stem_stride=model.stem_stride, pretrained=model.pretrained)
    if kind == "clip":
        clip = model.clip
        return CLIPModel(backbone, feature_dim, clip.embed_dim, asdict(clip.text),
                         init_logit_scale=float(clip.init_logit_scale))
    projector = ProjectionHead(feature_dim, model.projector.hidden_dim, model.projector.out_dim,
                               num_layers=model.projector.num_layers)
    return ContrastiveModel(backbone, feature_dim, projector)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without a host sync: copied asynchronously from pinned memory on a GPU
    (the DataLoader pins what it hands over; side information made here is pinned first)."""
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def graph_diagnostics_for(config: RunConfig) -> GraphDiagnostics | None:
    """The recorder of a graph-using run's target shares (X-CLR), None for the other methods."""
    method = config.method
    if not registered_method(method.name).uses_graph:
        return None
    return GraphDiagnostics(float(method.graph_temperature), mask_self=method.mask_self)


def build_loss_fn(config: RunConfig, train_dataset: Dataset, device: torch.device,
                  diagnostics: GraphDiagnostics | None = None) -> tuple[Callable | None, float]:
    """The per-batch loss closure (None for the baselines) and the seconds spent precomputing X-CLR side
    information. ``diagnostics`` (X-CLR) records the target of the first batches the closure sees: each
    batch's rows and labels are gathered over ranks, as the loss gathers them, so the shares are the
    global batch's."""
    method = config.method
    targets = registered_method(method.name).targets
    if targets is None:
        return None, 0.0

    if targets == "captions":
        criterion = losses.ClipLoss()

        def clip_step(model, batch, device):
            tokens = to_device(_unwrap(model).tokenize(list(batch["caption"])), device)
            images = batch["view1"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            image_features, text_features, logit_scale = model(images, tokens)
            return criterion(image_features, text_features, logit_scale)

        return clip_step, 0.0

    temperature = float(method.temperature)
    graph_seconds = 0.0
    if targets == "views":
        criterion = losses.SimCLRLoss(temperature)
    elif targets == "labels":
        criterion = losses.SupConLoss(temperature)
    else:
        criterion = losses.XCLRLoss(temperature, float(method.graph_temperature), mask_self=method.mask_self)
        started = time.perf_counter()
        side = build_side_information(config, train_dataset)
        graph_seconds = time.perf_counter() - started

    def contrastive_step(model, batch, device):
        # channels_last is faster for convolutions on GPU and on CPU alike (1.3-1.6x on 2 cores).
        images = torch.cat([batch["view1"], batch["view2"]]).to(device, non_blocking=True)
        images = images.contiguous(memory_format=torch.channels_last)
        z1, z2 = model(images).chunk(2)
        if targets == "views":
            return criterion(z1, z2)
        if targets == "labels":
            return criterion(z1, z2, to_device(batch["label"], device))
        rows = to_device(side(batch), device)
        if diagnostics is not None and diagnostics.wanted:
            diagnostics.add(gather_without_grad(rows), gather_without_grad(to_device(batch["label"], device)))
        return criterion(z1, z2, rows)

    return contrastive_step, graph_seconds


def build_training_setup(config: RunConfig, device: torch.device) -> TrainingSetup:
    train_dataset = build_train_dataset(config)
    diagnostics = graph_diagnostics_for(config)
    compute_loss, graph_seconds = build_loss_fn(config, train_dataset, device, diagnostics)
    optim = config.optim

    def make_optimizer(model: nn.Module, steps_per_epoch: int, total_steps: int):
        optimizer = build_optimizer(optim.name, model, lr_for(optim), float(optim.weight_decay), **optim.options)
        warmup = int(round(float(optim.warmup_epochs) * steps_per_epoch))
        scheduler = cosine_schedule_with_warmup(optimizer, min(warmup, total_steps), total_steps)
        return optimizer, scheduler

    num_views = registered_method(config.method.name).views
    return TrainingSetup(
        model=build_model(config), train_dataset=train_dataset,
        views=build_views(config, train_dataset, num_views, device),
        compute_loss=compute_loss, make_optimizer=make_optimizer, graph_seconds=graph_seconds,
        graph_diagnostics=diagnostics,
    )
