"""Deterministic, resumable sampling: a run interrupted mid-epoch continues with the same batches
and the same augmentations it would have drawn without the interruption."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

_EPOCH_STRIDE = 1 << 32


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), so nearby inputs give unrelated seeds."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


class ResumableDistributedSampler(Sampler[int]):
    """Per-epoch seeded permutation, split across ranks, starting at a given batch of the epoch.

    Yields ``epoch * 2**32 + index`` so the dataset wrapper knows the epoch of each sample and can
    seed its augmentation from (seed, epoch, index) alone, whatever the worker count.
    """

    def __init__(self, dataset_size: int, *, batch_size_per_rank: int, rank: int, world_size: int, seed: int):
        self.dataset_size = dataset_size
        self.batch_size_per_rank = batch_size_per_rank
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.batches_per_epoch = dataset_size // (batch_size_per_rank * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the global batch ({batch_size_per_rank * world_size}) is larger than the dataset "
                f"({dataset_size} samples): lower optim.batch_size or use more data"
            )
        self.epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size_per_rank

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        order = torch.randperm(self.dataset_size, generator=generator)
        used = order[: self.batches_per_epoch * self.batch_size_per_rank * self.world_size]
        # Rank r takes the r-th slice of every global batch, so the concatenation over ranks
        # equals the single-process batch (what the distributed equivalence tests compare).
        per_batch = used.view(self.batches_per_epoch, self.world_size, self.batch_size_per_rank)
        mine = per_batch[self.start_batch :, self.rank].reshape(-1)
        offset = self.epoch * _EPOCH_STRIDE
        return iter((offset + mine).tolist())


class SeededViewsDataset(Dataset):
    """Draws ``num_views`` augmentations of a base item, seeded by (seed, epoch, index)."""

    def __init__(self, base: Dataset, augmentation: Callable, *, num_views: int, seed: int):
        self.base = base
        self.augmentation = augmentation
        self.num_views = num_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, encoded: int) -> dict:
        epoch, position = divmod(int(encoded), _EPOCH_STRIDE)
        sample_seed = _mix(self.seed, epoch, position)
        torch.manual_seed(sample_seed)
        random.seed(sample_seed)
        item = self.base[position]
        out = {f"view{k + 1}": self.augmentation(item["image"]) for k in range(self.num_views)}
        out["index"] = int(item["index"])
        out["label"] = int(item.get("label", -1))
        out["caption"] = item.get("caption") or ""
        return out
