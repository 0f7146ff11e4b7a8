"""On-disk caption-embedding cache: one float16 row per sample, memory-mapped, built in resumable chunks.

Layout of a cache directory (named from the dataset's identity, the encoder and the template, so a
sample's row is found by its dataset index):

    embeddings.f16   (count, dim) float16, memory-mapped
    progress.json    chunks finished so far and the digest of each chunk's captions
    manifest.json    written last: model, template, count, dim, checksum and the dataset identity;
                     its presence means complete
    .lock            serialises concurrent builders (every job of an array may ask for the same cache)

A killed build resumes at the first unfinished chunk; a finished cache opens without touching the
encoder. The N x N graph is never materialised: the loss builds each batch's block from these rows.

A dataset's identity (``dataset_identity``) is its name, split, root, options (with the builder's
defaults filled in, so ``size=3k`` and ``size=3k caption_noise=0.0`` agree), row count and a
fingerprint of its captions. The command line and training both key caches by it, and opening a
cache checks that its rows and fingerprint are the dataset's: a cache is never reused for other data.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from xsample.graph.encoders import TextEncoder, load_text_encoder
from xsample.io import atomic_write_json
from xsample.locks import exclusive_lock

EMBEDDINGS_NAME = "embeddings.f16"
PROGRESS_NAME = "progress.json"
MANIFEST_NAME = "manifest.json"
DEFAULT_CHUNK_SIZE = 4096
FORMAT_VERSION = 2  # 2: keyed by dataset identity (split, root, count, caption fingerprint)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60]


class CacheMismatchError(ValueError):
    """A cache directory whose rows are not the dataset's (another dataset's, or damaged)."""


def caption_fingerprint(dataset: Any) -> str:
    """sha256 of the dataset's captions in index order.

    A streaming dataset may provide ``caption_fingerprint()`` itself (webdataset shards hash their
    names and sizes: hashing millions of captions would read every shard at each start).
    """
    captions = getattr(dataset, "captions", None)
    if not (isinstance(captions, Sequence) and not isinstance(captions, str)):
        if callable(getattr(dataset, "caption_fingerprint", None)):
            return str(dataset.caption_fingerprint())
        captions = captions_of(dataset)[1](0)
    digest = hashlib.sha256()
    for caption in captions:
        digest.update(caption.encode("utf-8", errors="replace") + b"\0")
    return digest.hexdigest()


def _canonical_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """Options with the registered builder's defaults filled in and numbers as floats, so a key
    does not depend on whether a default was spelled out (CLI) or given by the config (training)."""
    from xsample.data.registry import DATASETS

    filled = dict(options or {})
    builder = DATASETS.get(name)
    if builder is not None:
        for parameter in inspect.signature(builder).parameters.values():
            if parameter.name not in ("split", "root") and parameter.default is not inspect.Parameter.empty:
                filled.setdefault(parameter.name, parameter.default)
    return {key: float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
            for key, value in sorted(filled.items())}


def dataset_identity(dataset: Any, *, name: str, split: str, root: str | Path | None = None,
                     options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a caption cache belongs to: name, split, root, options, row count and caption fingerprint."""
    count, _ = captions_of(dataset)
    return {"name": name, "split": split, "root": str(Path(root).resolve()) if root else None,
            "options": _canonical_options(name, options), "count": count, "fingerprint": caption_fingerprint(dataset)}


def cache_directory(cache_root: str | Path, identity: dict[str, Any], encoder_name: str, template: str) -> Path:
    """Deterministic directory for one (dataset identity, encoder, template) triple."""
    key = json.dumps({"dataset": identity, "encoder": encoder_name, "template": template,
                      "format": FORMAT_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    label = "-".join(_slug(str(identity.get(part) or "")) for part in ("name", "split") if identity.get(part))
    return Path(cache_root) / f"{label or 'dataset'}-{_slug(encoder_name)}-{digest}"


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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class CaptionEmbeddingCache:
    """Read access to a complete cache: ``rows(indices)`` returns their float16 embeddings."""

    def __init__(self, directory: str | Path, expected: dict[str, Any] | None = None):
        """Open a complete cache; with ``expected`` (a ``dataset_identity``), refuse one whose rows
        are not that dataset's captions."""
        self.directory = Path(directory)
        try:
            manifest = json.loads((self.directory / MANIFEST_NAME).read_text())
        except PermissionError:
            raise PermissionError(f"caption cache {self.directory}: cannot read {MANIFEST_NAME} (permission denied); "
                                  "ask its owner to make it group-readable, or use another cache root") from None
        except (OSError, ValueError):
            manifest = None
        if manifest is None:
            raise FileNotFoundError(f"{self.directory} is not a complete caption cache (no {MANIFEST_NAME}); "
                                    "build it with `python -m xsample.graph build`")
        self.manifest = manifest
        self._verify(expected)
        self.embeddings = np.memmap(self.directory / EMBEDDINGS_NAME, dtype=np.float16, mode="r",
                                    shape=(manifest["count"], manifest["dim"]))

    def _verify(self, expected: dict[str, Any] | None) -> None:
        manifest = self.manifest
        size = (self.directory / EMBEDDINGS_NAME).stat().st_size if (self.directory / EMBEDDINGS_NAME).exists() else 0
        problems = []
        if size != int(manifest["count"]) * int(manifest["dim"]) * 2:
            problems.append(f"{EMBEDDINGS_NAME} has {size} bytes, not {manifest['count']} x {manifest['dim']} float16")
        if expected is not None:
            stored = manifest.get("dataset") or {}
            if int(manifest["count"]) != expected["count"]:
                problems.append(f"it holds {manifest['count']} rows but the dataset has {expected['count']}")
            if stored.get("fingerprint") != expected["fingerprint"]:
                problems.append(f"its captions fingerprint {str(stored.get('fingerprint'))[:12]} is not the "
                                f"dataset's {expected['fingerprint'][:12]}")
        if problems:
            raise CacheMismatchError(
                f"caption cache {self.directory} does not belong to dataset "
                f"{(expected or manifest.get('dataset') or {}).get('name', '?')}: {'; '.join(problems)}. "
                "Delete that directory to rebuild it.")

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def rows(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        index = np.asarray(indices, dtype=np.int64)  # host indices: a batch's field, never a device tensor
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"sample index out of range for a cache of {len(self)} rows")
        return torch.from_numpy(np.ascontiguousarray(self.embeddings[index]))

    @classmethod
    def build(cls, directory: str | Path, count: int, captions_from: Callable[[int], Iterator[str]],
              encoder: TextEncoder, *, template: str = "{}", chunk_size: int = DEFAULT_CHUNK_SIZE,
              batch_size: int = 256, progress: bool = True,
              identity: dict[str, Any] | None = None) -> CaptionEmbeddingCache:
        """Build (or finish, or just open) the cache in ``directory``; ``identity`` (a
        ``dataset_identity``) is recorded in the manifest and checked when the cache exists."""
        directory = Path(directory)
        if "{}" not in template:
            raise ValueError(f"caption template {template!r} needs a '{{}}' where the caption goes")
        if identity is not None and identity["count"] != count:
            raise ValueError(f"dataset identity counts {identity['count']} captions but {count} were given")
        with exclusive_lock(directory / ".lock", what=f"caption cache {directory.name}"):
            if not (directory / MANIFEST_NAME).exists():
                _build_chunks(directory, count, captions_from, encoder, template, chunk_size, batch_size, progress,
                              identity)
        return cls(directory, expected=identity)

    @classmethod
    def for_dataset(cls, dataset: Any, *, cache_root: str | Path, encoder_name: str, template: str = "{}",
                    name: str, split: str, root: str | Path | None = None, options: dict[str, Any] | None = None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = True) -> CaptionEmbeddingCache:
        """The cache of ``dataset``'s captions (``name``/``split``/``root``/``options`` as it was built
        with), built on first use; the command line and training both open caches through here."""
        identity = dataset_identity(dataset, name=name, split=split, root=root, options=options)
        directory = cache_directory(cache_root, identity, encoder_name, template)
        if (directory / MANIFEST_NAME).exists():
            return cls(directory, expected=identity)
        count, captions_from = captions_of(dataset)
        return cls.build(directory, count, captions_from, load_text_encoder(encoder_name), template=template,
                         chunk_size=chunk_size, progress=progress, identity=identity)


def _build_chunks(directory: Path, count: int, captions_from: Callable[[int], Iterator[str]], encoder: TextEncoder,
                  template: str, chunk_size: int, batch_size: int, progress: bool,
                  identity: dict[str, Any] | None) -> None:
    if count <= 0:
        raise ValueError("cannot build a caption cache for an empty dataset")
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = identity["fingerprint"] if identity else None
    state = {"count": count, "dim": encoder.dim, "chunk_size": chunk_size, "encoder": encoder.name,
             "template": template, "fingerprint": fingerprint, "chunk_digests": []}
    saved = _read_json(directory / PROGRESS_NAME)
    resumable = ("count", "dim", "chunk_size", "encoder", "template", "fingerprint")
    if saved and all(saved.get(k) == state[k] for k in resumable):
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
        "dataset": identity,
    })


def _templated(captions: Iterable[str], template: str) -> Iterator[str]:
    return (template.format(caption) for caption in captions)
