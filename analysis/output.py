"""Atomic file writes: a reader (or a crash) never sees a half-written table or figure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO

from xsample.io import atomic_write


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write` on a temporary file next to `path`, then rename it over `path` (mode as the umask says)."""
    atomic_write(path, write)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))
