"""The paper's evaluation datasets, read from their published on-disk layouts.

Every loader only lists files at construction (no image is opened until ``__getitem__``), so building
ImageNet's 1.28M-image index costs a directory walk, not a decode pass. Layouts:

  imagenet       root/{train,val}/<wnid>/*.JPEG; readable class names for the 1000 ImageNet-1k wnids ship with
                 the dependencies (open_clip, timm); other wnids need root/LOC_synset_mapping.txt
  imagenet_real  root/real.json and root/val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG
  imagenet9      root/<variant>/val/<NN_classname>/*.JPEG and root/in_to_in9.json
  objectnet      root/images/<folder>/*.png|jpg and root/mappings/{objectnet_to_imagenet_1k.json,
                 folder_to_objectnet_label.json, imagenet_to_label_2012_v2}
  mit_states     root/images/<"adjective noun">/*.jpg
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from xsample.data.decode import CorruptImageError, EncodedImage, first_readable, open_rgb
from xsample.data.registry import check_split, register_dataset, require_root

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
IMAGENET9_VARIANTS = ("original", "only_fg", "no_fg", "mixed_same", "mixed_rand")
OBJECTNET_BORDER_PX = 2  # ObjectNet images carry a 1-pixel red frame; 2 px clears it after any resampling
MIT_STATES_NO_ATTRIBUTE = "adj"  # MIT-States folder adjective for images without an annotated state


def _image_files(directory: Path) -> list[str]:
    return sorted(entry.path for entry in os.scandir(directory)
                  if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))


def _class_folders(directory: Path) -> list[str]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is missing: expected one sub-folder of images per class")
    folders = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not folders:
        raise FileNotFoundError(f"{directory} has no class sub-folders")
    return folders


def _read_json(path: Path, hint: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {hint}")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {hint}") from error


class ImageFileDataset(Dataset):
    """Images listed on disk with an integer label each; subclasses add per-item extras.

    An unreadable image is replaced by the next readable one (deterministically, so a resumed run meets the
    same items) and the item's ``skipped`` field names the unreadable position (-1 when none). The field
    travels with the batch out of DataLoader workers, where no counter would be seen, to the training loop,
    which counts distinct skipped positions against its limit (xsample/train/skipped.py).
    """

    class_names: list[str]
    images_encoded = False  # set by keep_images_encoded

    def __init__(self, files: list[str], labels: list[int]):
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def keep_images_encoded(self) -> None:
        """From now on ``image`` is the file's bytes (``EncodedImage``), for a batched decoder."""
        self.images_encoded = True

    def load_image(self, position: int) -> Image.Image | EncodedImage:
        if self.images_encoded:
            try:
                return EncodedImage(Path(self.files[position]).read_bytes(), self.files[position])
            except OSError as error:  # vanished, unreadable, an I/O error of the mount: skipped like corrupt data
                raise CorruptImageError(f"cannot read image {self.files[position]} ({error}); delete or replace it") from error
        return open_rgb(self.files[position])

    def extras(self, position: int) -> dict:
        return {}

    def item_index(self, position: int) -> int:
        return position

    def __getitem__(self, position: int) -> dict:
        (candidate, image), skipped = first_readable(position, len(self), lambda c: (c, self.load_image(c)),
                                                     f"images in a row from {self.files[position]} on")
        return {"image": image, "index": self.item_index(candidate), "label": int(self.labels[candidate]),
                "caption": "", "skipped": skipped, **self.extras(candidate)}


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in sorted order, the order of every 1000-class index (timm ships the list)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@functools.cache
def imagenet_index() -> dict[str, int]:
    """wnid -> its index among the 1000 ImageNet-1k classes."""
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


@functools.cache
def imagenet_readable_names() -> dict[str, str]:
    """wnid -> readable class name ("tench"), from open_clip's curated list (CLIP's zero-shot names, sorted-wnid order)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return dict(zip(imagenet_wnids(), IMAGENET_CLASSNAMES, strict=True))


def _imagenet_class_names(root: Path, wnids: list[str]) -> list[str]:
    """Readable names ("tench") for the class folders: the shipped ImageNet-1k names, and for other wnids the
    first name of their line in root/LOC_synset_mapping.txt. The shipped names win, so X-CLR's class-name graph
    does not depend on whether that optional file is present. A wnid named by neither is an error, never a name."""
    standard = imagenet_readable_names()
    unknown = [wnid for wnid in wnids if wnid not in standard]
    if not unknown:
        return [standard[wnid] for wnid in wnids]
    mapping_file = root / "LOC_synset_mapping.txt"
    listed = {}
    if mapping_file.is_file():
        for line in mapping_file.read_text().splitlines():
            wnid, _, names = line.strip().partition(" ")
            if wnid and names.split(",")[0].strip():
                listed[wnid] = names.split(",")[0].strip()
    unnamed = [wnid for wnid in unknown if wnid not in listed]
    if unnamed:
        raise ValueError(
            f"{root}: {len(unnamed)} class folder(s) are not ImageNet-1k wnids and have no readable name "
            f"(e.g. {unnamed[0]}); add a line '<wnid> <name>, ...' per class to {mapping_file} "
            "(X-CLR's class-name graph and zero-shot prompts need readable names)")
    return [standard.get(wnid) or listed[wnid] for wnid in wnids]


def _imagenet_indices(wnids: list[str]) -> list[int]:
    """Each class's index among the 1000 ImageNet-1k classes, or -1 for a wnid outside them."""
    return [imagenet_index().get(wnid, -1) for wnid in wnids]


class ImageNet(ImageFileDataset):
    def __init__(self, root: Path, split: str):
        split_dir = root / split
        self.wnids = _class_folders(split_dir)
        files, labels = [], []
        for label, wnid in enumerate(self.wnids):
            class_files = _image_files(split_dir / wnid)
            files += class_files
            labels += [label] * len(class_files)
        super().__init__(files, labels)
        self.class_names = _imagenet_class_names(root, self.wnids)
        # Class maps of other test sets (ImageNet-9, ObjectNet) index the 1000 classes; a root holding a
        # subset of them (ImageNet-100, the fixtures) is probed in its own class order and mapped through this.
        self.imagenet_indices = _imagenet_indices(self.wnids)


class ImageNetReaL(ImageFileDataset):
    """ImageNet val with the reassessed labels of Beyer et al. 2020 (google-research/reassessed-imagenet).

    Layout: ``root/real.json`` and ``root/val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG``. The k-th entry of
    real.json belongs to the k-th val image when all val images are sorted by file name (across classes).
    Images whose list is empty (no valid ImageNet class) are left out; ``excluded_empty`` counts them.
    ``index`` is the image's position in that sorted val order, so it names the same image as real.json.
    real.json's labels index the 1000 ImageNet-1k classes; they are translated into this root's class order
    (sorted wnids), dropping classes the root does not hold, so a subset root scores like its probe.
    """

    def __init__(self, root: Path):
        val_dir = root / "val"
        self.wnids = _class_folders(val_dir)
        by_name = sorted((os.path.basename(path), path, label)
                         for label, wnid in enumerate(self.wnids) for path in _image_files(val_dir / wnid))
        real = _read_json(root / "real.json", "download it from github.com/google-research/reassessed-imagenet")
        if not isinstance(real, list) or len(real) != len(by_name):
            count = len(real) if isinstance(real, list) else "no list"
            raise ValueError(f"{root / 'real.json'} has {count} entries but {val_dir} holds {len(by_name)} images; "
                             "they must match one to one (all 50000 val images)")
        standard = imagenet_wnids()
        own_class = {wnid: label for label, wnid in enumerate(self.wnids)}
        translated = [[own_class[standard[int(label)]] for label in labels if standard[int(label)] in own_class]
                      for labels in real]
        kept = [k for k, labels in enumerate(translated) if labels]
        self.excluded_empty = len(real) - len(kept)
        self.val_positions = np.asarray(kept, dtype=np.int64)
        self.real_labels = [translated[k] for k in kept]
        super().__init__([by_name[k][1] for k in kept], [by_name[k][2] for k in kept])
        self.class_names = _imagenet_class_names(root, self.wnids)

    def extras(self, position: int) -> dict:
        return {"real_labels": list(self.real_labels[position])}

    def item_index(self, position: int) -> int:
        return int(self.val_positions[position])


class ImageNet9(ImageFileDataset):
    """Backgrounds-challenge ImageNet-9 (Xiao et al. 2020): one split per variant, labels are the 9 super-classes.

    ``imagenet_class_map[i]`` is the super-class of ImageNet class ``i`` (sorted-wnid order) or -1.
    """

    def __init__(self, root: Path, variant: str):
        map_file = root / "in_to_in9.json"
        if not map_file.is_file():
            raise FileNotFoundError(
                f"dataset imagenet9: {map_file} is missing. Download in_to_in9.json from "
                "github.com/MadryLab/backgrounds_challenge (repository root) into the dataset root."
            )
        mapping = _read_json(map_file, "re-download it from github.com/MadryLab/backgrounds_challenge")
        self.imagenet_class_map = [int(mapping[key]) for key in sorted(mapping, key=int)]
        variant_dir = root / variant / "val"
        folders = _class_folders(variant_dir)  # "00_dog" ... "08_insect": the prefix fixes the order
        files, labels = [], []
        for label, folder in enumerate(folders):
            class_files = _image_files(variant_dir / folder)
            files += class_files
            labels += [label] * len(class_files)
        super().__init__(files, labels)
        self.class_names = [folder.split("_", 1)[-1] for folder in folders]
        self.variant = variant


class ObjectNet(ImageFileDataset):
    """ObjectNet (Barbu et al. 2019) restricted to the classes that overlap ImageNet-1k (113 of 313).

    Labels index the kept ObjectNet classes (sorted by name); ``imagenet_class_map[i]`` is the kept class
    of ImageNet class ``i`` or -1. Each image loses its 1-pixel red frame (2 px cropped per side).
    """

    keep_images_encoded = None  # the frame crop needs decoded pixels

    def __init__(self, root: Path):
        mappings = root / "mappings"
        hint = "it ships in the ObjectNet release under mappings/"
        objectnet_to_imagenet = _read_json(mappings / "objectnet_to_imagenet_1k.json", hint)
        folder_to_label = _read_json(mappings / "folder_to_objectnet_label.json", hint)
        imagenet_names_file = mappings / "imagenet_to_label_2012_v2"
        if not imagenet_names_file.is_file():
            raise FileNotFoundError(f"{imagenet_names_file} is missing; {hint}")
        imagenet_names = [line.strip() for line in imagenet_names_file.read_text().splitlines() if line.strip()]
        imagenet_index = {name: i for i, name in enumerate(imagenet_names)}

        self.class_names = sorted(name for name in set(folder_to_label.values()) if name in objectnet_to_imagenet)
        self.imagenet_class_map = [-1] * len(imagenet_names)
        for label, name in enumerate(self.class_names):
            for imagenet_name in objectnet_to_imagenet[name].split(";"):
                imagenet_name = imagenet_name.strip()
                if imagenet_name not in imagenet_index:
                    raise ValueError(f"{mappings / 'objectnet_to_imagenet_1k.json'} maps {name!r} to "
                                     f"{imagenet_name!r}, which is not a line of {imagenet_names_file}")
                i = imagenet_index[imagenet_name]
                if self.imagenet_class_map[i] != -1:  # keep the first claim so the map stays a function
                    log.warning("ImageNet class %r maps to ObjectNet %r and %r; keeping the first", imagenet_name,
                                self.class_names[self.imagenet_class_map[i]], name)
                    continue
                self.imagenet_class_map[i] = label

        label_of = {name: label for label, name in enumerate(self.class_names)}
        images_dir = root / "images"
        files, labels = [], []
        for folder in _class_folders(images_dir):
            label = label_of.get(folder_to_label.get(folder, ""))
            if label is None:
                continue
            class_files = _image_files(images_dir / folder)
            files += class_files
            labels += [label] * len(class_files)
        super().__init__(files, labels)

    def load_image(self, position: int) -> Image.Image:
        image = super().load_image(position)
        width, height = image.size
        b = OBJECTNET_BORDER_PX
        return image.crop((b, b, width - b, height - b))


class MITStates(ImageFileDataset):
    """MIT-States (Isola et al. 2015): ``label`` is the noun, ``attribute`` the adjective of each image.

    Folders are named "adjective noun"; the "adj" folders (no annotated state) are skipped.
    """

    def __init__(self, root: Path):
        images_dir = root / "images"
        pairs = []
        for folder in _class_folders(images_dir):
            adjective, _, noun = folder.partition(" ")
            if adjective != MIT_STATES_NO_ATTRIBUTE and noun:
                pairs.append((folder, adjective, noun))
        self.class_names = sorted({noun for _, _, noun in pairs})
        self.attribute_names = sorted({adjective for _, adjective, _ in pairs})
        noun_index = {noun: i for i, noun in enumerate(self.class_names)}
        adjective_index = {adjective: i for i, adjective in enumerate(self.attribute_names)}
        files, labels, attributes = [], [], []
        for folder, adjective, noun in pairs:
            class_files = _image_files(images_dir / folder)
            files += class_files
            labels += [noun_index[noun]] * len(class_files)
            attributes += [adjective_index[adjective]] * len(class_files)
        super().__init__(files, labels)
        self.attributes = np.asarray(attributes, dtype=np.int64)

    def extras(self, position: int) -> dict:
        return {"attribute": int(self.attributes[position])}


@register_dataset("imagenet")
def build_imagenet(split: str, root=None) -> ImageNet:
    check_split("imagenet", split, ("train", "val"))
    return ImageNet(require_root("imagenet", root), split)


@register_dataset("imagenet_real")
def build_imagenet_real(split: str, root=None) -> ImageNetReaL:
    check_split("imagenet_real", split, ("val",))
    return ImageNetReaL(require_root("imagenet_real", root))


@register_dataset("imagenet9")
def build_imagenet9(split: str, root=None) -> ImageNet9:
    check_split("imagenet9", split, IMAGENET9_VARIANTS)
    return ImageNet9(require_root("imagenet9", root), split)


@register_dataset("objectnet")
def build_objectnet(split: str, root=None) -> ObjectNet:
    check_split("objectnet", split, ("test",))
    return ObjectNet(require_root("objectnet", root))


@register_dataset("mit_states")
def build_mit_states(split: str, root=None) -> MITStates:
    check_split("mit_states", split, ("all",))
    return MITStates(require_root("mit_states", root))
