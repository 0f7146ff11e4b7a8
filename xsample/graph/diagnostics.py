"""Graph diagnostics: how X-CLR's target row spreads over a batch, and how similar the batch's samples are.

X-CLR's target for a row is softmax_j(G_ij / graph_temperature) over the same columns as the logits (the
self pair masked when ``mask_self``, the other view of the row's sample at G = 1): built here by the loss's
own target builder (``xsample.losses.targets.xclr_targets``), so the diagnostics describe exactly what the
loss trains towards. Per row, the target's mass is split into

- ``share_other_view``: the row's other augmented view (what SimCLR puts all of its mass on);
- ``share_same_class``: every column of a sample of the row's class, the other view included (what SupCon
  spreads its mass over); None when the samples have no class labels (caption data);
- ``share_rest``: the other classes' samples (X-CLR's between-class edges), ``1 - share_same_class``.

``mean_offdiagonal`` is the mean graph similarity between distinct samples of the batch. All are means over
rows and batches. A training run also records ``rows_fingerprint``, a hash of the side-information rows of its
recorded batches: two runs that draw the same batches (same seed) share it exactly when their graphs agree
(a noisy-caption or permuted-graph run differs from its clean twin). The values depend on the batch size, as
X-CLR's target does: with the MiniLM ImageNet class-name graph and graph_temperature 0.1 (``paper_profile``),
the same-class share is 0.34 at batch 4096 and 0.54 at batch 256, the other view's 0.04 and 0.43.

``target_shares`` takes one batch; ``batch_diagnostics`` draws batches from a dataset's per-sample rows and
labels (the world-design helper calibrates graph_temperature with it); ``GraphDiagnostics`` accumulates the
first batches a training run sees; ``paper_profile`` measures the paper's ImageNet class-name graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xsample.losses.core import TwoViewLayout, full_precision, unit_rows
from xsample.losses.targets import xclr_targets

SHARES = ("share_other_view", "share_same_class", "share_rest")
FIELDS = ("mean_offdiagonal", *SHARES)
# Training records the first batches it sees (a few are enough: rows are many, batches are random).
TRAINING_BATCHES = 8
# The paper's batch (4096, a harness default for the paper profile) and the third-party reading (1024); 256
# shows how fast the other view takes over as the batch shrinks.
PAPER_PROFILE_BATCH_SIZES = (4096, 1024, 256)
# ImageNet-1k's 1,281,167 training images over 1000 classes (732 to 1300 each); batches are drawn from them.
IMAGENET_TRAIN_IMAGES_PER_CLASS = 1281


def target_shares(embeddings: Tensor, labels: Tensor | None, graph_temperature: float,
                  mask_self: bool = True) -> dict[str, float | None]:
    """The diagnostics of one batch: ``embeddings`` (N, E) per-sample text embeddings (the graph is their
    cosine, as the loss builds it), ``labels`` (N,) class ids, or None (or all negative) for unlabelled data."""
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"need an (N, E) batch of at least 2 embeddings, got shape {tuple(embeddings.shape)}")
    size = embeddings.shape[0]
    with full_precision(embeddings.device):
        unit = unit_rows(embeddings.float())
        graph = unit @ unit.T
        layout = TwoViewLayout(size, size, 0, embeddings.device)
        probabilities = xclr_targets(graph, layout, graph_temperature, mask_self).probabilities
    own = torch.eye(size, dtype=torch.bool, device=embeddings.device)
    other_view = probabilities.diagonal()
    # A block entry stands for two columns (one per view); the masked self column is the one missing.
    self_share = 0.0 if mask_self else other_view
    result: dict[str, float | None] = {
        "mean_offdiagonal": float(graph[~own].mean()),
        "share_other_view": float(other_view.mean()),
    }
    if labels is None or bool((labels < 0).all()):
        result["share_same_class"] = None
        result["share_rest"] = float((2 * (probabilities * ~own).sum(1)).mean())
        return result
    labels = labels.to(embeddings.device)
    same_class = labels[:, None] == labels[None, :]
    result["share_same_class"] = float((2 * (probabilities * same_class).sum(1) - other_view + self_share).mean())
    result["share_rest"] = float((2 * (probabilities * ~same_class).sum(1)).mean())
    return result


class GraphDiagnostics:
    """Means of ``target_shares`` over the batches added (a training run adds its first TRAINING_BATCHES).

    ``add`` only keeps a copy of the batch where it lies: a training step never waits for the host here. The
    shares are computed when ``summary`` is read, after training."""

    def __init__(self, graph_temperature: float, mask_self: bool = True, batches: int = TRAINING_BATCHES):
        self.graph_temperature, self.mask_self, self.batches = float(graph_temperature), bool(mask_self), int(batches)
        self.recorded: list[tuple[Tensor, Tensor | None]] = []

    @property
    def seen(self) -> int:
        return len(self.recorded)

    @property
    def wanted(self) -> bool:
        return self.seen < self.batches

    def add(self, embeddings: Tensor, labels: Tensor | None) -> None:
        self.recorded.append((embeddings.detach().clone(), None if labels is None else labels.detach().clone()))

    def summary(self) -> dict[str, Any] | None:
        """The recorded means (None before any batch), with how they were measured."""
        if not self.recorded:
            return None
        sums: dict[str, float] = {}
        rows_digest = hashlib.sha256()
        for embeddings, labels in self.recorded:
            for key, value in target_shares(embeddings, labels, self.graph_temperature, self.mask_self).items():
                if value is not None:
                    sums[key] = sums.get(key, 0.0) + value
            # float16, as the caption cache stores rows: the last bits of a float32 encoder output do not count.
            rows_digest.update(embeddings.to("cpu", torch.float16).numpy().tobytes())
        means = {key: round(sums[key] / self.seen, 5) if key in sums else None for key in FIELDS}
        return {**means, "batches": self.seen, "batch_size": int(self.recorded[-1][0].shape[0]),
                "graph_temperature": self.graph_temperature, "rows_fingerprint": rows_digest.hexdigest()[:16]}


def batch_diagnostics(rows_of: Callable[[np.ndarray], Tensor], labels: np.ndarray | None, count: int, *,
                      batch_size: int, graph_temperature: float, batches: int = TRAINING_BATCHES, seed: int = 0,
                      mask_self: bool = True) -> dict[str, Any]:
    """``GraphDiagnostics`` over ``batches`` random batches (distinct samples, as a training epoch draws them)
    of a dataset of ``count`` samples: ``rows_of(indices)`` gives their embeddings, ``labels`` their classes."""
    if not 2 <= batch_size <= count:
        raise ValueError(f"batch_size must be in [2, {count}] (the dataset's size), got {batch_size}")
    rng = np.random.default_rng(seed)
    diagnostics = GraphDiagnostics(graph_temperature, mask_self, batches)
    while diagnostics.wanted:
        indices = rng.choice(count, size=batch_size, replace=False)
        diagnostics.add(rows_of(indices), None if labels is None else torch.as_tensor(np.asarray(labels)[indices]))
    return diagnostics.summary()


def class_graph_profile(class_embeddings: Tensor, batch_sizes: Sequence[int], *, graph_temperature: float,
                        samples_per_class: int, batches: int = TRAINING_BATCHES, seed: int = 0) -> dict[str, Any]:
    """The diagnostics of a class-name graph at each batch size, for a balanced dataset with
    ``samples_per_class`` images per class, plus the mean similarity between distinct classes."""
    classes = class_embeddings.shape[0]
    unit = unit_rows(class_embeddings.float())
    labels = np.repeat(np.arange(classes), samples_per_class)
    between = (unit @ unit.T)[~torch.eye(classes, dtype=torch.bool)]
    return {
        "classes": classes, "class_mean_offdiagonal": round(float(between.mean()), 5),
        "by_batch_size": {int(size): batch_diagnostics(lambda indices: unit[torch.as_tensor(labels[indices])], labels,
                                                       len(labels), batch_size=int(size), batches=batches, seed=seed,
                                                       graph_temperature=graph_temperature)
                          for size in batch_sizes},
    }


def paper_profile(encoder_name: str = "all-MiniLM-L6-v2", template: str = "a photo of a {}",
                  graph_temperature: float = 0.1, batch_sizes: Sequence[int] = PAPER_PROFILE_BATCH_SIZES,
                  batches: int = TRAINING_BATCHES, seed: int = 0) -> dict[str, Any]:
    """The diagnostics of the paper's setting: the 1000 ImageNet-1k class names (shipped with open_clip/timm)
    through the text encoder, ImageNet's ~1281 training images per class, at each batch size."""
    from xsample.data.paper_datasets import imagenet_readable_names, imagenet_wnids
    from xsample.graph.encoders import class_caption_embeddings, load_text_encoder

    names = imagenet_readable_names()
    embeddings = class_caption_embeddings([names[wnid] for wnid in imagenet_wnids()], load_text_encoder(encoder_name),
                                          template=template)
    profile = class_graph_profile(embeddings, batch_sizes, graph_temperature=graph_temperature,
                                  samples_per_class=IMAGENET_TRAIN_IMAGES_PER_CLASS, batches=batches, seed=seed)
    return {"graph": "ImageNet-1k class names", "encoder": encoder_name, "template": template, **profile}
