"""Counting the training samples skipped as unreadable, over all ranks, against a limit.

Map-style datasets flag each replaced item (its ``skipped`` field, see ``ImageFileDataset``), and so does
the batched decoder for an image it could not decode on the GPU; the set of distinct flagged positions is
kept here, in the main process, gathered over the ranks at the loop's sync points and saved with the
checkpoint, so a file met every epoch counts once. Shard streams count their own skips (``samples_skipped``, shared across workers).
A few damaged files are normal at ImageNet scale; more than ``max_fraction`` of the data means a broken
copy or mount, and the run stops with a message saying so instead of training on what is left.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from xsample.train.distributed import DistInfo, gather_objects, sum_over_ranks


class TooManySkippedError(RuntimeError):
    """More of the training data was unreadable than runtime.max_skipped_fraction allows."""


class SkippedSamples:
    def __init__(self, dataset, dataset_size: int, max_fraction: float, positions: Iterable[int] = ()):
        if not 0 <= max_fraction < 1:
            raise ValueError(f"runtime.max_skipped_fraction must be in [0, 1), got {max_fraction}")
        self.dataset, self.dataset_size, self.max_fraction = dataset, dataset_size, max_fraction
        self.positions = {int(p) for p in positions}

    def add(self, flags: np.ndarray | torch.Tensor) -> None:
        """Record a batch's ``skipped`` field (one position or -1 per item), a host array: no device sync."""
        flags = flags.numpy() if isinstance(flags, torch.Tensor) else np.asarray(flags)
        if (flags >= 0).any():
            self.positions.update(int(p) for p in flags[flags >= 0])

    def gather(self, info: DistInfo) -> set[int]:
        """The distinct positions skipped on all ranks so far (a collective: every rank must call it)."""
        self.positions = set().union(*gather_objects(sorted(self.positions), info))
        return self.positions

    def total(self, info: DistInfo) -> int:
        """Samples skipped so far on all ranks (a collective: every rank must call it)."""
        streamed = torch.tensor([int(getattr(self.dataset, "samples_skipped", 0) or 0)], dtype=torch.int64,
                                device=info.device)
        return len(self.gather(info)) + int(sum_over_ranks(streamed, info).item())

    def check(self, info: DistInfo, samples_seen: int) -> int:
        """The total, after failing the run when it exceeds the limit: distinct positions against the dataset
        size, or for a stream (whose skips repeat with every draw of a shard) skips against samples read."""
        total = self.total(info)
        streamed = getattr(self.dataset, "samples_skipped", None) is not None
        size = samples_seen + total if streamed else self.dataset_size
        if total > self.max_fraction * size:
            raise TooManySkippedError(
                f"{total} of {size} training samples were unreadable (more than "
                f"runtime.max_skipped_fraction={self.max_fraction:g}); the log names the files: repair or re-copy "
                "the dataset, or raise runtime.max_skipped_fraction")
        return total
