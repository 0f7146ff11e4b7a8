"""Deterministic, resumable sampling: a run interrupted mid-epoch continues with the same batches
and the same augmentations it would have drawn without the interruption.

Shard streams (CC3M/CC12M webdataset) cannot seek: they are resampled instead, reseeded from the
step at which the stream (re)starts, so a requeued job continues with fresh, reproducible draws."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, Sampler

from xsample.config import AUGMENT_PATHS
from xsample.data.decode import (
    MAX_CONSECUTIVE_UNREADABLE,
    CorruptImageError,
    UnreadableRunError,
    first_readable,
)

_EPOCH_STRIDE = 1 << 32


def augment_problem(config: dict) -> str | None:
    """The line that says ``runtime.augment`` of a composed config is not one of AUGMENT_PATHS, or None."""
    choice = config["runtime"]["augment"]
    return None if choice in AUGMENT_PATHS else f"runtime.augment={choice!r} is not a choice; use one of {', '.join(AUGMENT_PATHS)}"


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
    """A base item turned into a training item by ``views`` (``PILViews`` or ``BatchedViews``), which draw
    its randomness from a per-sample seed of (seed, epoch, index)."""

    def __init__(self, base: Dataset, views: Callable[[dict, int], dict], *, seed: int):
        self.base = base
        self.views = views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, encoded: int) -> dict:
        """Images kept encoded are decoded here, by ``views``: one that cannot be is skipped like those the
        dataset itself finds unreadable, the next sample standing in and ``skipped`` naming it."""
        epoch, position = divmod(int(encoded), _EPOCH_STRIDE)
        item, skipped = first_readable(position, len(self),
                                       lambda candidate: self.views(self.base[candidate], _mix(self.seed, epoch, candidate)),
                                       f"training images in a row from position {position} on")
        return item if skipped < 0 else {**item, "skipped": skipped}


class StreamedViews(IterableDataset):
    """``SeededViewsDataset`` for a resampled shard stream with ``set_epoch`` (CC3M/CC12M shards)."""

    def __init__(self, base: IterableDataset, views: Callable[[dict, int], dict], *, seed: int):
        self.base = base
        self.views = views
        self.seed = seed
        self.stream_seed = 0

    def restart_at(self, step: int) -> None:
        """Reseed the shard draws from the step the stream starts at."""
        self.stream_seed = _mix(self.seed, step) & 0x7FFFFFFF
        self.base.set_epoch(self.stream_seed)

    def __iter__(self) -> Iterator[dict]:
        """Items whose image cannot be decoded here (a shard member that looked like a complete JPEG) are
        skipped and counted by the stream, like those it finds undecodable itself."""
        unreadable_in_a_row = 0
        for item in self.base:
            try:
                yield self.views(item, _mix(self.seed, self.stream_seed, int(item["index"])))
                unreadable_in_a_row = 0
            except CorruptImageError as error:
                unreadable_in_a_row += 1
                if unreadable_in_a_row >= MAX_CONSECUTIVE_UNREADABLE:
                    raise UnreadableRunError(f"{unreadable_in_a_row} images in a row of the stream are unreadable "
                                             f"(the last: {error}); check the shards") from error
                self.base.count_skipped(1, str(error))
