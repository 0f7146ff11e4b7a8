"""Fashion-MNIST, the one real labelled image set installable offline (Debian: dataset-fashion-mnist)."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from xsample.data.items import RGB_PIXELS
from xsample.data.registry import check_split, register_dataset, require_root

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"cannot read {path}: {error}; reinstall dataset-fashion-mnist") from error
    dims = raw[3]
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08 or dims != expected_dims:
        raise ValueError(f"{path} is not an IDX file of {expected_dims} dimensions; reinstall dataset-fashion-mnist")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@lru_cache(maxsize=4)
def _load(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = (Path(root) / name for name in _FILES[split])
    for path in (images_file, labels_file):
        if not path.exists():
            raise FileNotFoundError(
                f"dataset fashion_mnist: {path} is missing. Install it (apt-get install dataset-fashion-mnist) "
                "or set paths.fashion_mnist (XSAMPLE_FASHION_MNIST_ROOT) to a folder with the .gz files."
            )
    return _read_idx(images_file, 3), _read_idx(labels_file, 1)


class FashionMNIST(Dataset):
    class_names = CLASS_NAMES

    def __init__(self, root: Path, split: str, max_samples: int | None = None, seed: int = 0):
        images, labels = _load(str(root), split)
        positions = np.arange(len(labels))
        if max_samples is not None and max_samples < len(labels):
            # Seeded and class-balanced, so tiny runs see every class equally.
            rng = np.random.default_rng(seed)
            per_class = max_samples // len(CLASS_NAMES)
            positions = np.sort(np.concatenate([
                rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in range(len(CLASS_NAMES))
            ]))
        self.images = images
        self.positions = positions
        self.labels = labels[positions].astype(np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        position = int(self.positions[i])
        rgb = np.repeat(self.images[position][:, :, None], 3, axis=2)  # what PIL's L -> RGB conversion gives
        return {"image": Image.fromarray(rgb, mode="RGB"), RGB_PIXELS: rgb, "index": position,
                "label": int(self.labels[i]), "caption": ""}


@register_dataset("fashion_mnist", default_root=DEBIAN_ROOT)
def build_fashion_mnist(split: str, root=None, max_samples: int | None = None, seed: int = 0) -> FashionMNIST:
    check_split("fashion_mnist", split, tuple(_FILES))
    return FashionMNIST(require_root("fashion_mnist", root), split, max_samples, seed)
