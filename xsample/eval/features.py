"""Frozen-encoder feature extraction: one pass over a dataset, features plus the label fields evals need."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class _TransformedItems(Dataset):
    """Applies the eval transform and keeps only the requested item fields (module level: picklable for workers)."""

    def __init__(self, dataset: Dataset, transform: Callable, extra_keys: Sequence[str]):
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
        return {"image": self.transform(item["image"]), **{key: item[key] for key in self.extra_keys}}


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
    value is an int, otherwise a list (e.g. ``real_labels``: one list of ints per item). The encoder's
    training mode is restored afterwards.
    """
    if len(dataset) == 0:
        raise ValueError("cannot extract features from an empty dataset; check the dataset split and options")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    loader = DataLoader(_TransformedItems(dataset, transform, extra_keys), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate, pin_memory=device.type == "cuda")
    was_training = encoder.training
    encoder.eval()
    feature_chunks: list[torch.Tensor] = []
    extras: dict[str, list[Any]] = {key: [] for key in extra_keys}
    try:
        with torch.no_grad():
            for batch in loader:
                output = encoder(batch["image"].to(device, non_blocking=True))
                if not isinstance(output, torch.Tensor) or output.ndim != 2:
                    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                    raise ValueError(f"the encoder must return a [batch, dim] tensor of features, got {shape}; "
                                     "pass the backbone (pooled features), not the full model")
                feature_chunks.append(output.float().cpu())
                for key in extra_keys:
                    extras[key].extend(batch[key])
    finally:
        encoder.train(was_training)
    return torch.cat(feature_chunks), {key: _as_tensor_if_integers(values) for key, values in extras.items()}
