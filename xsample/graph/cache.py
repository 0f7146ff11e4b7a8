"""On-disk caption-embedding cache: one float16 row per sample, memory-mapped, built in resumable chunks.

Layout of a cache directory (named from the dataset key, encoder and template, so a sample's row is
found by its dataset index):

    embeddings.f16   (count, dim) float16, memory-mapped
    progress.json    chunks finished so far and the digest of each chunk's captions
    manifest.json    written last: model, template, count, dim, checksum; its presence means complete
    .lock            serialises concurrent builders (every job of an array may ask for the same cache)

A killed build resumes at the first unfinished chunk; a finished cache opens without touching the
encoder. The N x N graph is never materialised: the loss builds each batch's block from these rows.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xsample.graph.encoders import TextEncoder, load_text_encoder
from xsample.io import atomic_write_json

EMBEDDINGS_NAME = "embeddings.f16"
PROGRESS_NAME = "progress.json"
MANIFEST_NAME = "manifest.json"
DEFAULT_CHUNK_SIZE = 4096
FORMAT_VERSION = 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60]


def cache_directory(cache_root: str | Path, dataset_key: dict[str, Any], encoder_name: str, template: str) -> Path:
    """Deterministic directory for one (dataset, encoder, template) triple."""
    key = json.dumps({"dataset": dataset_key, "encoder": encoder_name, "template": template,
                      "format": FORMAT_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_root) / f"{_slug(str(dataset_key.get('name', 'dataset')))}-{_slug(encoder_name)}-{digest}"


def captions_of(dataset: Any) -> tuple[int, Callable[[int], Iterator[str]]]:
    """(count, iterator factory starting at a given index) for a captioned dataset.

    Map-style datasets expose a ``captions`` sequence; streaming ones (webdataset shards) expose
    ``iter_captions()`` and a declared ``__len__``.
    """
    captions = getattr(dataset, "captions", None)
    if isinstance(captions, Sequence) and not isinstance(captions, str):
        return len(captions), lambda start: iter(captions[start:])
    if callable(getattr(dataset, "iter_captions", None)):
        return len(dataset), lambda start: itertools.islice(dataset.iter_captions(), start, None)
    raise ValueError(f"{type(dataset).__name__} has no captions: use graph=class_names for a labelled dataset")


@contextmanager
def _exclusive(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class CaptionEmbeddingCache:
    """Read access to a complete cache: ``rows(indices)`` returns their float16 embeddings."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest = _read_json(self.directory / MANIFEST_NAME)
        if manifest is None:
            raise FileNotFoundError(f"{self.directory} is not a complete caption cache (no {MANIFEST_NAME}); "
                                    "build it with `python -m xsample.graph build`")
        self.manifest = manifest
        self.embeddings = np.memmap(self.directory / EMBEDDINGS_NAME, dtype=np.float16, mode="r",
                                    shape=(manifest["count"], manifest["dim"]))

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def rows(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        index = torch.as_tensor(indices).cpu().numpy()
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"sample index out of range for a cache of {len(self)} rows")
        return torch.from_numpy(np.ascontiguousarray(self.embeddings[index]))

    @classmethod
    def build(cls, directory: str | Path, count: int, captions_from: Callable[[int], Iterator[str]],
              encoder: TextEncoder, *, template: str = "{}", chunk_size: int = DEFAULT_CHUNK_SIZE,
              batch_size: int = 256, progress: bool = True) -> CaptionEmbeddingCache:
        """Build (or finish, or just open) the cache in ``directory``."""
        directory = Path(directory)
        if "{}" not in template:
            raise ValueError(f"caption template {template!r} needs a '{{}}' where the caption goes")
        with _exclusive(directory / ".lock"):
            if not (directory / MANIFEST_NAME).exists():
                _build_chunks(directory, count, captions_from, encoder, template, chunk_size, batch_size, progress)
        return cls(directory)

    @classmethod
    def for_dataset(cls, dataset: Any, *, cache_root: str | Path, encoder_name: str, template: str = "{}",
                    dataset_key: dict[str, Any], chunk_size: int = DEFAULT_CHUNK_SIZE,
                    progress: bool = True) -> CaptionEmbeddingCache:
        """The cache of ``dataset``'s captions, built on first use."""
        directory = cache_directory(cache_root, dataset_key, encoder_name, template)
        if (directory / MANIFEST_NAME).exists():
            return cls(directory)
        count, captions_from = captions_of(dataset)
        return cls.build(directory, count, captions_from, load_text_encoder(encoder_name), template=template,
                         chunk_size=chunk_size, progress=progress)


def _build_chunks(directory: Path, count: int, captions_from: Callable[[int], Iterator[str]], encoder: TextEncoder,
                  template: str, chunk_size: int, batch_size: int, progress: bool) -> None:
    if count <= 0:
        raise ValueError("cannot build a caption cache for an empty dataset")
    directory.mkdir(parents=True, exist_ok=True)
    state = {"count": count, "dim": encoder.dim, "chunk_size": chunk_size, "encoder": encoder.name,
             "template": template, "chunk_digests": []}
    saved = _read_json(directory / PROGRESS_NAME)
    if saved and all(saved.get(k) == state[k] for k in ("count", "dim", "chunk_size", "encoder", "template")):
        state = saved
    embeddings_path = directory / EMBEDDINGS_NAME
    mode = "r+" if embeddings_path.exists() and state["chunk_digests"] else "w+"
    if mode == "w+":
        state["chunk_digests"] = []
    embeddings = np.memmap(embeddings_path, dtype=np.float16, mode=mode, shape=(count, encoder.dim))
    start = len(state["chunk_digests"]) * chunk_size
    captions = _templated(captions_from(start), template)
    bar = tqdm(total=count, initial=start, unit="caption", desc=f"caption cache {directory.name}",
               disable=not progress, smoothing=0.1)
    while start < count:
        chunk = list(itertools.islice(captions, min(chunk_size, count - start)))
        if len(chunk) < min(chunk_size, count - start):
            raise ValueError(f"dataset yielded {start + len(chunk)} captions but declares {count}")
        embeddings[start:start + len(chunk)] = encoder.encode(chunk, batch_size=batch_size).numpy().astype(np.float16)
        embeddings.flush()  # rows reach the disk before progress claims them
        state["chunk_digests"].append(hashlib.sha256("\n".join(chunk).encode()).hexdigest())
        atomic_write_json(directory / PROGRESS_NAME, state)
        start += len(chunk)
        bar.update(len(chunk))
    bar.close()
    del embeddings
    checksum = hashlib.sha256("".join(state["chunk_digests"]).encode()).hexdigest()
    atomic_write_json(directory / MANIFEST_NAME, {
        "format": FORMAT_VERSION, "model": encoder.name, "template": template, "count": count,
        "dim": encoder.dim, "dtype": "float16", "checksum": checksum, "chunk_size": chunk_size,
    })


def _templated(captions: Iterable[str], template: str) -> Iterator[str]:
    return (template.format(caption) for caption in captions)
