"""SimCLR, SupCon, X-CLR and CLIP losses as one code path over the contrastive core.

The public functions are the single-process losses. The private ``*_over_ranks`` forms take
``gather``: with it, under torch.distributed, rows stay local and columns are gathered (see
``distributed``); the modules in ``modules`` call them that way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from xsample.losses.core import (
    BlockTargets,
    TwoViewLayout,
    check_temperature,
    check_two_views,
    contrastive_cross_entropy,
    full_precision,
    unit_rows,
)
from xsample.losses.distributed import (
    check_equal_local_batches,
    gather_with_grad,
    gather_without_grad,
    rank_and_world_size,
)
from xsample.losses.targets import simclr_targets, supcon_targets, xclr_targets

TargetBuilder = Callable[[TwoViewLayout, torch.dtype], Tensor | BlockTargets]


def two_view_loss(z1: Tensor, z2: Tensor, build_targets: TargetBuilder, *, temperature: float,
                  mask_self: bool = True, gather: bool = False) -> Tensor:
    """The contrastive loss of rows [z1; z2] against the (global) columns, with the given targets."""
    check_two_views(z1, z2)
    scale = 1.0 / check_temperature("temperature", temperature)
    local_size = z1.shape[0]
    rank, world_size = rank_and_world_size() if gather else (0, 1)
    with full_precision(z1.device):
        rows = unit_rows(torch.cat([z1, z2]))
        if world_size == 1:
            columns = rows
        else:
            check_equal_local_batches(local_size, z1.device)
            # Gathered as [rank0: z1, z2][rank1: z1, z2]...; reorder to the single-process [Z1; Z2].
            gathered = gather_with_grad(rows).view(world_size, 2, local_size, -1)
            columns = gathered.transpose(0, 1).reshape(2 * world_size * local_size, -1)
        layout = TwoViewLayout(local_size, world_size * local_size, rank * local_size, z1.device)
        with torch.no_grad():
            targets = build_targets(layout, rows.dtype)
        return contrastive_cross_entropy(rows, columns, scale, targets, layout.self_columns() if mask_self else None)


def simclr_loss(z1: Tensor, z2: Tensor, *, temperature: float) -> Tensor:
    """NT-Xent: each of the 2N rows must pick its other view among the 2N - 1 others."""
    return simclr_loss_over_ranks(z1, z2, temperature=temperature, gather=False)


def simclr_loss_over_ranks(z1: Tensor, z2: Tensor, *, temperature: float, gather: bool) -> Tensor:
    return two_view_loss(z1, z2, lambda layout, dtype: simclr_targets(layout), temperature=temperature, gather=gather)


def _check_labels(labels: Tensor, size: int) -> None:
    if labels.dim() != 1 or labels.shape[0] != size or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be an integer vector with one class id per sample ({size}), got dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}; pass the batch's class ids as a LongTensor"
        )


def supcon_loss(z1: Tensor, z2: Tensor, labels: Tensor, *, temperature: float) -> Tensor:
    """Supervised contrastive loss, L_out form: uniform target over the other rows of the same class."""
    return supcon_loss_over_ranks(z1, z2, labels, temperature=temperature, gather=False)


def supcon_loss_over_ranks(z1: Tensor, z2: Tensor, labels: Tensor, *, temperature: float, gather: bool) -> Tensor:
    _check_labels(labels, z1.shape[0])
    labels = labels.to(z1.device)

    def targets(layout: TwoViewLayout, dtype: torch.dtype) -> BlockTargets:
        global_labels = gather_without_grad(labels) if layout.global_size > layout.local_size else labels
        return supcon_targets(labels, global_labels, layout, dtype)

    return two_view_loss(z1, z2, targets, temperature=temperature, gather=gather)


def xclr_loss(z1: Tensor, z2: Tensor, graph: Tensor, *, temperature: float, graph_temperature: float,
              mask_self: bool = True) -> Tensor:
    """X-CLR: cross-entropy against the row softmax of ``graph / graph_temperature``.

    ``graph`` is the (N, N) sample similarity (no gradient flows into it); both views of sample a
    use row a and column a. ``mask_self`` drops the self pair from both logits and targets.
    """
    size = z1.shape[0]
    if graph.shape != (size, size):
        raise ValueError(
            f"graph must be (N, N) = ({size}, {size}) for N = {size} samples, got {tuple(graph.shape)}; "
            "pass the similarity of the batch's samples to each other (e.g. cosine of caption embeddings)"
        )
    return _xclr_from_graph_rows(z1, z2, lambda layout: graph, temperature=temperature,
                                 graph_temperature=graph_temperature, mask_self=mask_self, gather=False)


def xclr_loss_over_ranks(z1: Tensor, z2: Tensor, text_embeddings: Tensor, *, temperature: float,
                         graph_temperature: float, mask_self: bool, gather: bool) -> Tensor:
    """X-CLR whose graph is the cosine similarity of per-sample text embeddings (N_local, E)."""
    if text_embeddings.dim() != 2 or text_embeddings.shape[0] != z1.shape[0]:
        raise ValueError(
            f"text_embeddings must be (N, E) with one row per sample (N = {z1.shape[0]}), got "
            f"{tuple(text_embeddings.shape)}; pass the batch's caption/class-name embeddings"
        )

    def graph_rows(layout: TwoViewLayout) -> Tensor:
        local = unit_rows(text_embeddings.to(z1.device))
        everyone = gather_without_grad(local) if layout.global_size > layout.local_size else local
        return local @ everyone.T

    return _xclr_from_graph_rows(z1, z2, graph_rows, temperature=temperature,
                                 graph_temperature=graph_temperature, mask_self=mask_self, gather=gather)


def _xclr_from_graph_rows(z1: Tensor, z2: Tensor, graph_rows: Callable[[TwoViewLayout], Tensor], *,
                          temperature: float, graph_temperature: float, mask_self: bool, gather: bool) -> Tensor:
    graph_temperature = check_temperature("graph_temperature", graph_temperature)

    def targets(layout: TwoViewLayout, dtype: torch.dtype) -> BlockTargets:
        rows = graph_rows(layout).to(device=layout.device, dtype=dtype)
        return xclr_targets(rows, layout, graph_temperature, mask_self)

    return two_view_loss(z1, z2, targets, temperature=temperature, mask_self=mask_self, gather=gather)


def clip_loss(image_features: Tensor, text_features: Tensor, *, logit_scale: float | Tensor) -> Tensor:
    """Symmetric image-text InfoNCE; ``logit_scale`` (already exponentiated) multiplies the cosines."""
    return clip_loss_over_ranks(image_features, text_features, logit_scale=logit_scale, gather=False)


def _check_logit_scale(logit_scale: float | Tensor) -> None:
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}; pass model.logit_scale.exp()")
        # Checking a CUDA value would stall the stream every step; exp() of a parameter is positive anyway.
        if logit_scale.device.type == "cpu":
            check_temperature("logit_scale", logit_scale.item())
    else:
        check_temperature("logit_scale", logit_scale)


def clip_loss_over_ranks(image_features: Tensor, text_features: Tensor, *, logit_scale: float | Tensor,
                         gather: bool) -> Tensor:
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features and text_features must both be (N, D) for the same N image-caption pairs, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}; project both towers to one embed_dim"
        )
    _check_logit_scale(logit_scale)
    local_size = image_features.shape[0]
    rank, world_size = rank_and_world_size() if gather else (0, 1)
    with full_precision(image_features.device):
        images, texts = unit_rows(image_features), unit_rows(text_features)
        if isinstance(logit_scale, Tensor):
            logit_scale = logit_scale.reshape(()).to(images.dtype)
        all_images, all_texts = images, texts
        if world_size > 1:
            check_equal_local_batches(local_size, images.device)
            all_images, all_texts = gather_with_grad(images), gather_with_grad(texts)
        pairs = torch.arange(rank * local_size, (rank + 1) * local_size, device=images.device)
        per_image = contrastive_cross_entropy(images, all_texts, logit_scale, pairs)
        per_text = contrastive_cross_entropy(texts, all_images, logit_scale, pairs)
        return (per_image + per_text) / 2
