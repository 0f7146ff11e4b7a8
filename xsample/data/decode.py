"""Reading one image: JPEG bytes or a file to RGB pixels, what counts as unreadable (``CorruptImageError``),
and skipping past unreadable images without hiding a broken copy (``first_readable``)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

log = logging.getLogger(__name__)


def is_complete_jpeg(data: bytes) -> bool:
    """A JPEG stream with its start and end markers: worth handing to the batched decoder unopened."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (the training loop skips and counts it)."""


# More unreadable images in a row than this is a broken dataset, not a few damaged files: stop looking.
MAX_CONSECUTIVE_UNREADABLE = 16


class UnreadableRunError(CorruptImageError):
    """MAX_CONSECUTIVE_UNREADABLE images in a row were unreadable: the copy is broken; never skipped."""


def first_readable(position: int, length: int, load: Callable[[int], Any], what: str) -> tuple[Any, int]:
    """``load(candidate)`` for the first candidate from ``position`` on (cyclically) that does not raise
    CorruptImageError, and the first position skipped (-1: none). ``what`` names the run of images in
    the error raised when MAX_CONSECUTIVE_UNREADABLE candidates in a row cannot be read."""
    skipped = -1
    for offset in range(min(MAX_CONSECUTIVE_UNREADABLE, length)):
        candidate = (position + offset) % length
        try:
            return load(candidate), skipped
        except UnreadableRunError:
            raise
        except CorruptImageError as error:
            log.warning("%s; skipped (the next readable image stands in for it)", error)
            skipped = candidate if skipped < 0 else skipped
    raise UnreadableRunError(f"{MAX_CONSECUTIVE_UNREADABLE} {what} are unreadable; check the dataset's files "
                             "(disk, mount, an interrupted copy)")


class EncodedImage:
    """A JPEG file's bytes, handed from a worker to the batched decoder; ``source`` names it in errors."""

    def __init__(self, data: bytes, source: str):
        self.data, self.source = data, source


def open_rgb(file: str | os.PathLike | io.BytesIO, source: str | os.PathLike | None = None) -> Image.Image:
    """The image in ``file`` as RGB, fully decoded here so that a damaged one fails with its name
    (``source``, default ``file``), not later in a worker."""
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except UnidentifiedImageError:
        reason = "cannot identify image file"
    except (OSError, SyntaxError, ValueError) as error:  # truncated or malformed data surfaces at decode
        reason = str(error) or type(error).__name__
    raise CorruptImageError(f"corrupt image {source if source is not None else file} ({reason}); delete or replace it")


def _rgb_uint8(image: Image.Image) -> Tensor:
    # convert() copies even an RGB image: a third of this call's time for the tiny worlds' 32 px images.
    return torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB"))).permute(2, 0, 1)


def pil_to_uint8(image: Image.Image, max_side: int) -> Tensor:
    """``(3, H, W)`` uint8 pixels of an RGB image, downscaled to ``max_side`` when larger."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return _rgb_uint8(image)


def decode_on_cpu(data: bytes, source: str) -> Tensor:
    """Decode with PIL: the fallback for non-JPEG or damaged data; a clear error naming the image."""
    return _rgb_uint8(open_rgb(io.BytesIO(data), source))
