"""Conceptual Captions 3M / 12M streamed from img2dataset webdataset shards.

Layout: ``root/*.tar`` where each sample is ``<key>.jpg`` (image), ``<key>.txt`` (caption) and
``<key>.json`` (metadata), plus the ``<shard>_stats.json`` files img2dataset writes beside each shard.
Their "successes" counts give every shard's sample count, hence a stable global ``index`` per sample
(shards sorted by name, then position inside the shard): the X-CLR caption-embedding cache is keyed by
that index and built from ``iter_captions()``.

``caption_noise`` (Table 4) gives a seeded fraction of each shard's samples another sample's caption of the same
shard (xsample.data.caption_noise): training items and ``iter_captions`` (hence the caption cache) read the same
noisy captions, and the cache is keyed by the noise.

Damaged data never stops a run: an undecodable image or a sample without caption is skipped, and a
truncated tar is read up to the damage; ``samples_skipped`` and ``shards_truncated`` count both over all
DataLoader workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from xsample.data.caption_noise import caption_donors, check_caption_noise
from xsample.data.decode import EncodedImage, is_complete_jpeg
from xsample.data.registry import check_split, register_dataset, require_root

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSION = "txt"
# A resampling pass that keeps drawing shards without finding one usable sample has unreadable data.
MAX_EMPTY_DRAWS_PER_SHARD = 10
_SKIPPED, _TRUNCATED = 0, 1
# Seeds each shard's caption noise with its name's checksum: the same samples are corrupted wherever it is copied.
_CAPTION_NOISE_SEED = 19


def _split_member_name(name: str) -> tuple[str, str]:
    """("dir/000123", "jpg") from "dir/000123.jpg": webdataset's rule, the key ends at the basename's first dot."""
    directory, _, basename = name.rpartition("/")
    stem, _, extension = basename.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


def _shard_samples(path: Path, extensions: tuple[str, ...], streaming: bool) -> Iterator[dict[str, bytes]]:
    """One ``{extension: bytes}`` per sample key, in file order; members of other extensions are not read.

    ``streaming`` reads the tar front to back (suited to network file systems); otherwise headers are
    visited by seeking, which skips image bytes when only captions are wanted. tarfile raises
    ``tarfile.TarError``/``OSError``/``EOFError`` at a truncation; the partial sample there is dropped.
    """
    with tarfile.open(path, mode="r|" if streaming else "r:") as tar:
        current_key, current = None, {}
        for member in tar:
            if not member.isfile():
                continue
            key, extension = _split_member_name(member.name)
            if key != current_key:
                if current_key is not None:
                    yield current
                current_key, current = key, {}
            current[extension] = tar.extractfile(member).read() if extension in extensions else b""
        if current_key is not None:
            yield current


def _distributed_position() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CaptionedShards(IterableDataset):
    """Items ``{"image": PIL RGB, "index": int, "label": -1, "caption": str}`` from webdataset shards
    (``image`` an ``EncodedImage`` of JPEG bytes after ``keep_images_encoded``).

    Each (DDP rank, DataLoader worker) pair reads its own shards. With ``resampled=True`` (training) every
    pair draws shards with replacement from a generator seeded by (seed, epoch, rank, worker) and yields a
    fixed quota, ``len // world_size`` per rank: ranks always produce equal batch counts, and a restarted
    run needs no reader state, only ``set_epoch``. With ``resampled=False`` every sample is read once,
    shards dealt round-robin over the pairs (for evaluation or a single process).
    """

    def __init__(self, name: str, root: Path, num_samples: int | None = None, resampled: bool = True,
                 seed: int = 0, caption_noise: float = 0.0):
        self.name, self.resampled, self.seed, self.epoch = name, resampled, seed, 0
        self.caption_noise = check_caption_noise(caption_noise)
        self.images_encoded = False
        self.shards = sorted(root.glob("*.tar"))
        if not self.shards:
            raise FileNotFoundError(f"dataset {name}: no *.tar shards in {root} "
                                    "(expected img2dataset webdataset output)")
        self.shard_sizes = self._shard_sizes(num_samples)
        self.shard_offsets = np.concatenate([[0], np.cumsum(self.shard_sizes)[:-1]]).astype(np.int64)
        self.num_samples = int(num_samples) if num_samples is not None else int(sum(self.shard_sizes))
        if self.num_samples != sum(self.shard_sizes):
            log.warning("dataset %s: num_samples=%d but the shards hold %d samples; indices at or past %d are dropped",
                        name, self.num_samples, sum(self.shard_sizes), self.num_samples)
        # Shared memory, so increments made inside DataLoader workers reach this object.
        self._counters = torch.zeros(2, dtype=torch.int64).share_memory_()

    def _shard_sizes(self, num_samples: int | None) -> list[int]:
        stats_files = [shard.with_name(f"{shard.stem}_stats.json") for shard in self.shards]
        missing = [shard for shard, stats in zip(self.shards, stats_files, strict=True) if not stats.is_file()]
        if missing and num_samples is None:
            raise ValueError(
                f"dataset {self.name}: {len(missing)} shard(s) lack an img2dataset stats file (e.g. "
                f"{missing[0].stem}_stats.json), so the sample count is unknown; keep the *_stats.json files beside "
                f"the shards or pass the dataset option num_samples"
            )
        if missing:
            # Stable indices still need every shard's size: count those shards' members once (header scan).
            log.warning("dataset %s: counting samples of %d shard(s) without stats files", self.name, len(missing))
        sizes = []
        for shard, stats in zip(self.shards, stats_files, strict=True):
            if stats.is_file():
                sizes.append(int(json.loads(stats.read_text())["successes"]))
            else:
                sizes.append(self._count_readable(shard))
        return sizes

    def _count_readable(self, shard: Path) -> int:
        count = 0
        try:
            for _ in _shard_samples(shard, (), streaming=False):
                count += 1
        except (tarfile.TarError, OSError, EOFError) as error:
            log.warning("dataset %s: %s is truncated after %d samples (%s)", self.name, shard, count, error)
        return count

    @property
    def samples_skipped(self) -> int:
        return int(self._counters[_SKIPPED])

    @property
    def shards_truncated(self) -> int:
        return int(self._counters[_TRUNCATED])

    def __len__(self) -> int:
        return self.num_samples

    def keep_images_encoded(self) -> None:
        """From now on complete JPEGs are handed over as bytes (``EncodedImage``), for a batched decoder;
        anything else is still decoded here, so that undecodable samples are skipped as before."""
        self.images_encoded = True

    def set_epoch(self, epoch: int) -> None:
        """Reseeds shard resampling, so each epoch (and its rerun after a restart) draws the same shards."""
        self.epoch = int(epoch)

    def count_skipped(self, count: int, reason: str) -> None:
        """Count ``count`` samples as skipped (for any DataLoader worker) and log why."""
        self._counters[_SKIPPED] += count
        log.warning("dataset %s: skipped %d sample(s): %s (%d skipped so far)", self.name, count, reason,
                    self.samples_skipped)

    def _items(self, shard_number: int) -> Iterator[dict]:
        """The usable items of one shard, with global indices."""
        shard, size = self.shards[shard_number], self.shard_sizes[shard_number]
        offset = int(self.shard_offsets[shard_number])
        # With caption noise a sample's caption may be a later sample's: the shard's captions are read first.
        noisy = self.shard_captions(shard_number) if self.caption_noise > 0 else None
        position, damage = 0, "fewer samples than its stats file declares"
        try:
            for sample in _shard_samples(shard, IMAGE_EXTENSIONS + (CAPTION_EXTENSION,), streaming=True):
                position += 1
                index = offset + position - 1
                if position > size or index >= self.num_samples:
                    continue  # outside the declared count: no caption-cache row exists for it
                item = self._decode(sample, index, shard, None if noisy is None else noisy[position - 1])
                if item is not None:
                    yield item
        except (tarfile.TarError, OSError, EOFError) as error:
            damage = str(error)
        # tarfile ends some truncated archives silently, so a short shard counts as truncated either way.
        if position < size:
            self._counters[_TRUNCATED] += 1
            log.warning("dataset %s: %s is truncated after %d of %d samples (%s); skipping the rest", self.name, shard,
                        position, size, damage)
            self.count_skipped(size - position, f"truncated shard {shard.name}")

    def _decode(self, sample: dict[str, bytes], index: int, shard: Path, caption: str | None) -> dict | None:
        """The item of one sample, with ``caption`` in place of its own when given (caption noise)."""
        image_bytes = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
        if image_bytes is None or CAPTION_EXTENSION not in sample:
            self.count_skipped(1, f"sample {index} in {shard.name} lacks an image or a caption")
            return None
        if self.images_encoded and is_complete_jpeg(image_bytes):
            image = EncodedImage(image_bytes, f"sample {index} in {shard.name}")
        else:
            try:
                with Image.open(io.BytesIO(image_bytes)) as opened:
                    image = opened.convert("RGB")
            except (OSError, SyntaxError, ValueError) as error:
                self.count_skipped(1, f"sample {index} in {shard.name} has an undecodable image ({error})")
                return None
        if caption is None:
            caption = _caption_text(sample)
        return {"image": image, "index": index, "label": -1, "caption": caption}

    def __iter__(self) -> Iterator[dict]:
        rank, world_size = _distributed_position()
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        consumer, consumers = rank * num_workers + worker_id, world_size * num_workers
        if self.resampled:
            per_rank = self.num_samples // world_size
            quota = per_rank // num_workers + (1 if worker_id < per_rank % num_workers else 0)
            yield from self._resampled_items(quota, rank, worker_id)
            return
        if consumers > len(self.shards) and consumer == 0:
            log.warning("dataset %s: %d shards for %d readers; some readers get none", self.name, len(self.shards),
                        consumers)
        for shard_number in range(consumer, len(self.shards), consumers):
            yield from self._items(shard_number)

    def _resampled_items(self, quota: int, rank: int, worker_id: int) -> Iterator[dict]:
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker_id])
        produced, empty_draws = 0, 0
        while produced < quota:
            found = False
            for item in self._items(int(rng.integers(len(self.shards)))):
                yield item
                produced, found = produced + 1, True
                if produced == quota:
                    return
            empty_draws = 0 if found else empty_draws + 1
            if empty_draws > MAX_EMPTY_DRAWS_PER_SHARD * len(self.shards):
                raise RuntimeError(f"dataset {self.name}: {empty_draws} shards drawn in a row gave no readable "
                                   f"sample; check the shards in {self.shards[0].parent}")

    def caption_fingerprint(self) -> str:
        """sha256 of the shard set (names, byte sizes, sample counts) and the caption noise: what the caption
        cache is keyed by. Names and sizes, not contents or mtimes, so copying the shards to local scratch
        keeps the cache."""
        described = [(shard.name, shard.stat().st_size, size) for shard, size in zip(self.shards, self.shard_sizes, strict=True)]
        noise = [self.caption_noise] if self.caption_noise > 0 else []  # clean shards keep their earlier key
        return hashlib.sha256(json.dumps([described, self.num_samples, *noise]).encode()).hexdigest()

    def shard_captions(self, shard_number: int) -> list[str]:
        """One shard's captions in position order (its declared size; "" for a sample without caption or
        lost to truncation), with the shard's caption noise applied, reading only the .txt members."""
        shard, size = self.shards[shard_number], self.shard_sizes[shard_number]
        captions: list[str] = []
        try:
            for sample in _shard_samples(shard, (CAPTION_EXTENSION,), streaming=False):
                if len(captions) == size:
                    break
                captions.append(_caption_text(sample))
        except (tarfile.TarError, OSError, EOFError) as error:
            log.warning("dataset %s: %s is truncated after %d captions (%s)", self.name, shard, len(captions), error)
        captions += [""] * (size - len(captions))
        if self.caption_noise > 0:
            donors = caption_donors(size, self.caption_noise, seed=[_CAPTION_NOISE_SEED, zlib.crc32(shard.name.encode())])
            captions = [captions[donor] for donor in donors]
        return captions

    def iter_captions(self) -> Iterator[str]:
        """Every caption in index order, ``len(self)`` in all, as training items carry them (``shard_captions``)."""
        emitted = 0
        for shard_number in range(len(self.shards)):
            for caption in self.shard_captions(shard_number):
                if emitted == self.num_samples:
                    return
                yield caption
                emitted += 1
        yield from [""] * (self.num_samples - emitted)


def _caption_text(sample: dict[str, bytes]) -> str:
    return sample.get(CAPTION_EXTENSION, b"").decode("utf-8", errors="replace").strip()


def _build_captioned_shards(name: str, split: str, root, num_samples: int | None, resampled: bool, seed: int,
                            caption_noise: float):
    check_split(name, split, ("train",))
    return CaptionedShards(name, require_root(name, root), num_samples=num_samples, resampled=resampled, seed=seed,
                           caption_noise=caption_noise)


@register_dataset("cc3m", labelled=False)
def build_cc3m(split: str, root=None, num_samples: int | None = None, resampled: bool = True,
               seed: int = 0, caption_noise: float = 0.0) -> CaptionedShards:
    return _build_captioned_shards("cc3m", split, root, num_samples, resampled, seed, caption_noise)


@register_dataset("cc12m", labelled=False)
def build_cc12m(split: str, root=None, num_samples: int | None = None, resampled: bool = True,
                seed: int = 0, caption_noise: float = 0.0) -> CaptionedShards:
    return _build_captioned_shards("cc12m", split, root, num_samples, resampled, seed, caption_noise)
