"""Counting host syncs: what a training step must not do between log steps (xsample/train/loop.py).

``HostSyncRecorder`` is a ``TorchFunctionMode`` that records every tensor call which, on a GPU, makes the
host wait for the device: reading a value back (``item``, ``tolist``, ``cpu``, ``numpy``, ``__bool__``,
``__float__``, ``__int__``, ``__index__``) or an op whose output size depends on the data (``nonzero``,
``masked_select``, ``unique``, indexing with a boolean mask). It sees these calls on CPU tensors too, so a
CPU test proves that the GPU step's code path makes none. ``cuda_syncs`` counts the synchronisations CUDA
itself reports (``torch.cuda.set_sync_debug_mode``), which also catch what no Python call shows (a
blocking copy from pageable memory, a library that synchronises inside).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode

READ_BACK = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
DATA_DEPENDENT = ("nonzero", "argwhere", "masked_select", "unique", "unique_consecutive")


def _boolean_index(args: tuple) -> bool:
    index = args[1] if len(args) > 1 else None
    indices = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


class HostSyncRecorder(TorchFunctionMode):
    """Inside ``with HostSyncRecorder() as recorder:``, ``recorder.calls`` counts the syncing calls by name
    and ``recorder.seen`` every torch call (proof that the mode saw the work)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen += 1
        name = getattr(func, "__name__", "")
        if name in READ_BACK or name in DATA_DEPENDENT:
            self.calls[name] += 1
        elif name in ("__getitem__", "__setitem__") and _boolean_index(args):
            self.calls[f"{name}[bool mask]"] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def cuda_syncs() -> Iterator[list[str]]:
    """The synchronising CUDA operations inside the block, one message each (empty off the GPU)."""
    found: list[str] = []
    if not torch.cuda.is_available():
        yield found
        return
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    found.extend(str(warning.message) for warning in caught if "synchroniz" in str(warning.message))
