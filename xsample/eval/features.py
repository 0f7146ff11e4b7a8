"""Frozen-encoder feature extraction: one pass over a dataset, features plus the label fields evals need.

It runs at training speed: under the training precision (bf16 on a GPU), channels_last, features copied
back without waiting for each batch, and on a GPU, for datasets of image files, through the batched
decode path of training (``BatchedEvalViews``). Unreadable images are left out (a dataset flags the item
that stands in for one in ``skipped``; the batched decoder reports its own) and counted.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xsample.data.items import RGB_PIXELS
from xsample.rundir.preemption import leave_preemption_to_the_main_process
from xsample.views.batched import BatchedEvalViews

log = logging.getLogger(__name__)


class _TransformedItems(Dataset):
    """Applies the eval transform and keeps only the requested item fields (module level: picklable for workers)."""

    def __init__(self, dataset: Dataset, transform: Callable | BatchedEvalViews, extra_keys: Sequence[str]):
        self.dataset = dataset
        self.transform = transform
        self.extra_keys = tuple(extra_keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.dataset[position]
        missing = [key for key in self.extra_keys if key not in item]
        if missing:
            raise KeyError(f"dataset item has no field(s) {missing}; it has {sorted(item)}. "
                           "Fix the evaluation spec's label key or the dataset options.")
        fields = {key: item[key] for key in self.extra_keys}
        fields["skipped"] = int(item.get("skipped", -1))
        if isinstance(self.transform, BatchedEvalViews):
            return {**self.transform.prepare(item["image"]), **fields}
        return {"image": self.transform(item["image"]), **fields}


class _PreparedItems(Dataset):
    """A dataset's items with the evaluation transform already applied (``"image"``: the input tensor)."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict[str, Any]:
        return self.items[position]


def already_applied(image: torch.Tensor) -> torch.Tensor:
    """The transform of ``prepared_items``' items (module level: picklable for workers)."""
    return image


# The evaluation inputs of small datasets, kept for every run of a process: a local sweep evaluates each run on
# the same test sets, and transforming a tiny run's ~20k evaluation images took ~40% of its evaluation time.
PREPARED_DATASET_LIMIT_BYTES = 160 << 20   # one dataset's transformed images (Fashion-MNIST's 10k test: 123 MB)
PREPARED_TOTAL_LIMIT_BYTES = 1 << 30
_prepared: OrderedDict[Hashable, tuple[_PreparedItems, int]] = OrderedDict()


def prepared_items(key: Hashable, dataset: Dataset, transform: Callable, image_size: int) -> _PreparedItems | None:
    """``dataset``'s items through ``transform``, made once per ``key`` in this process (the least recently used
    dropped beyond PREPARED_TOTAL_LIMIT_BYTES); None for a dataset whose inputs exceed
    PREPARED_DATASET_LIMIT_BYTES, which is transformed as it is encoded."""
    size = len(dataset) * 3 * image_size * image_size * 4
    if size > PREPARED_DATASET_LIMIT_BYTES:
        return None
    if key not in _prepared:
        # the transformed image replaces the pixels: an in-memory dataset's RGB_PIXELS are not kept twice
        _prepared[key] = (_PreparedItems([{**{name: value for name, value in item.items() if name != RGB_PIXELS},
                                           "image": transform(item["image"])} for item in dataset]), size)
        while sum(held for _, held in _prepared.values()) > PREPARED_TOTAL_LIMIT_BYTES:
            _prepared.popitem(last=False)
    _prepared.move_to_end(key)
    return _prepared[key][0]


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    # Extra fields stay Python lists here: some (real_labels) have a different length per item.
    return {"image": torch.stack([item["image"] for item in items]),
            **{key: [item[key] for item in items] for key in items[0] if key != "image"}}


def _as_tensor_if_integers(values: list[Any]) -> torch.Tensor | list[Any]:
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return torch.tensor(values, dtype=torch.long)
    if all(isinstance(value, torch.Tensor) and value.ndim == 0 for value in values):
        return torch.stack(values).long()
    return [list(value) if isinstance(value, tuple) else value for value in values]


def batched_eval_views(dataset: Dataset, image_size: int | None, device: torch.device) -> BatchedEvalViews | None:
    """The batched evaluation path for ``dataset`` when it applies (a GPU and a dataset that can hand over
    image files' bytes), after switching the dataset to do so; None otherwise."""
    from xsample.data import root_dataset

    root = root_dataset(dataset)
    if image_size is None or device.type != "cuda" or not callable(getattr(root, "keep_images_encoded", None)):
        return None
    root.keep_images_encoded()
    return BatchedEvalViews(int(image_size))


def encode_dataset(encoder: nn.Module, dataset: Dataset, transform: Callable | BatchedEvalViews, *, batch_size: int,
                   device: str | torch.device, num_workers: int = 0, extra_keys: Sequence[str] = ("label",),
                   autocast: Callable[[], Any] | None = None) -> tuple[torch.Tensor, dict[str, Any], int]:
    """``extract_features`` plus the number of unreadable images left out; ``autocast()`` (a context
    manager factory, e.g. bf16) wraps the encoder."""
    if len(dataset) == 0:
        raise ValueError("cannot extract features from an empty dataset; check the dataset split and options")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    batched = isinstance(transform, BatchedEvalViews)
    loader = DataLoader(_TransformedItems(dataset, transform, extra_keys), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=transform.collate if batched else _collate,
                        pin_memory=device.type == "cuda", worker_init_fn=leave_preemption_to_the_main_process)
    was_training = encoder.training
    encoder.eval()
    feature_chunks: list[torch.Tensor] = []
    keep: list[np.ndarray] = []
    extras: dict[str, list[Any]] = {key: [] for key in extra_keys}
    try:
        with torch.no_grad():
            for batch in loader:
                if batched:
                    images, readable = transform.on_device(batch, device)
                else:
                    images, readable = batch["image"].to(device, non_blocking=True), np.ones(len(batch["image"]), bool)
                with autocast() if autocast is not None else nullcontext():
                    output = encoder(images.contiguous(memory_format=torch.channels_last))
                if not isinstance(output, torch.Tensor) or output.ndim != 2:
                    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                    raise ValueError(f"the encoder must return a [batch, dim] tensor of features, got {shape}; "
                                     "pass the backbone (pooled features), not the full model")
                # Copied into pinned memory without waiting: the next batch is launched meanwhile.
                host = torch.empty(output.shape, dtype=torch.float32, pin_memory=device.type == "cuda")
                feature_chunks.append(host.copy_(output, non_blocking=True))
                keep.append(readable & (np.asarray(batch["skipped"]) < 0))
                for key in extra_keys:
                    extras[key].extend(batch[key])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        encoder.train(was_training)
    kept = np.concatenate(keep)
    skipped = int((~kept).sum())
    if skipped:
        log.warning("left %d unreadable image(s) of %d out of the features", skipped, len(kept))
    features = torch.cat(feature_chunks)[torch.from_numpy(kept)] if skipped else torch.cat(feature_chunks)
    return features, {key: _as_tensor_if_integers([v for v, k in zip(values, kept, strict=True) if k])
                      for key, values in extras.items()}, skipped


def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    transform: Callable,
    *,
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
    extra_keys: Sequence[str] = ("label",),
) -> tuple[torch.Tensor, dict[str, torch.Tensor | list[Any]]]:
    """Encode every item of ``dataset`` once with ``encoder`` in eval mode, without gradients.

    Returns float32 CPU features ``[N, D]`` in dataset order and, per extra key, a LongTensor when every
    value is an int, otherwise a list (e.g. ``real_labels``: one list of ints per item). Unreadable images
    are left out. The encoder's training mode is restored afterwards.
    """
    features, extras, _ = encode_dataset(encoder, dataset, transform, batch_size=batch_size, device=device,
                                         num_workers=num_workers, extra_keys=extra_keys)
    return features, extras
