"""A miniature copy of every paper dataset, in its real on-disk layout, rendered by the shapes world.

    python -m xsample.data.fixtures DIR [--images-per-class N] [--image-px PX] [--synset-mapping]
    source DIR/env.sh          # exports XSAMPLE_<NAME>_ROOT for every dataset

What is real: folder trees, file names and formats, the metadata files the loaders read (real.json,
in_to_in9.json, ObjectNet's mappings/, img2dataset's *_stats.json), ImageNet-1k wnids and their class
order, JPEGs of varied sizes around a few hundred pixels, the files a decoder trips over that ImageNet's
training set holds (progressive, grayscale and CMYK JPEGs, PNG data named .JPEG, junk bytes between JPEG
markers: every HARD_CASE_EVERY-th training image per class is one of them), ObjectNet's 1-pixel red frame,
failed downloads missing from the CC shards. What is not: the pictures (shapes on textures, upscaled) and
the class count (10 of the world's classes, each mapped onto a real wnid, together covering ImageNet-9's
super-classes). ``scale=rehearsal`` trains on it.

The same writers build the small hand-made layouts of the loader tests.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from xsample.data.paper_datasets import IMAGENET9_VARIANTS, imagenet_index, imagenet_wnids
from xsample.data.shapes import COLOUR_NAMES, OBJECTS, ShapesWorld

# The world's classes the fixtures hold, each as one real ImageNet-1k class, together covering ImageNet-9's
# super-classes (two fish: 10 classes, 9 groups; the world has no reptile or primate family, so a tree and a
# fruit stand in for them).
SHAPE_WNIDS = {
    "trout": ("n01440764", "fish"),              # tench
    "goldfish": ("n01443537", "fish"),           # goldfish
    "finch": ("n01530575", "bird"),              # brambling
    "pine": ("n01664065", "reptile"),            # loggerhead
    "beagle": ("n02085620", "dog"),              # Chihuahua
    "collie": ("n02119022", "carnivore"),        # red fox
    "bee": ("n02206856", "insect"),              # bee
    "apple": ("n02480495", "primate"),           # orangutan
    "van": ("n02814533", "wheeled vehicle"),     # beach wagon
    "guitar": ("n03272010", "musical instrument"),  # electric guitar
}
# Their labels in the shapes world's train and test splits.
FIXTURE_LABELS = [OBJECTS.index(name) for name in SHAPE_WNIDS]
IMAGENET9_CLASSES = ("dog", "bird", "wheeled vehicle", "reptile", "carnivore", "insect", "musical instrument",
                     "primate", "fish")
# ObjectNet folders (snake_case) and labels (classes of the world's objectnet split); the last one has no
# ImageNet counterpart, as most of ObjectNet.
OBJECTNET_LABELS = {"trout": "Tench", "goldfish": "Goldfish", "finch": "Brambling", "pine": "Loggerhead",
                    "beagle": "Chihuahua", "collie": "Red fox", "bee": "Bee"}
OBJECTNET_ONLY_LABEL = ("alarm_clock", "Alarm clock")
CC_SHARD_SIZE = 64
CC_FAILED_DOWNLOAD_EVERY = 10  # img2dataset keeps no member for a failed download; its stats count it
ENV_NAMES = ("imagenet", "imagenet_real", "imagenet9", "objectnet", "mit_states", "cc3m", "cc12m")
HARD_JPEG_CASES = ("progressive", "grayscale", "cmyk", "png_named_jpeg", "garbage_between_markers")
HARD_CASE_EVERY = 4
SIZE_FACTORS = (0.75, 1.0, 1.25, 1.5)  # short sides around --image-px, as ImageNet's vary


# --- writers shared with the loader tests --------------------------------------------------------

def jpeg_bytes(image: Image.Image | None = None, size: int = 8, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    (image or Image.new("RGB", (size, size), (200, 30, 30))).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def hard_jpeg(image: Image.Image, case: str, quality: int = 88) -> bytes:
    """``image`` as one of HARD_JPEG_CASES: a file named .JPEG that a decoder may trip over but that holds
    a readable picture (PIL reads every case)."""
    buffer = io.BytesIO()
    if case == "progressive":
        image.save(buffer, format="JPEG", quality=quality, progressive=True)
    elif case == "grayscale":
        image.convert("L").save(buffer, format="JPEG", quality=quality)
    elif case == "cmyk":
        image.convert("CMYK").save(buffer, format="JPEG", quality=quality)
    elif case == "png_named_jpeg":
        image.save(buffer, format="PNG")
    elif case == "garbage_between_markers":  # libjpeg: "extraneous bytes before marker 0xda", and decodes
        data = jpeg_bytes(image, quality=quality)
        start_of_scan = data.index(b"\xff\xda")
        return data[:start_of_scan] + bytes(range(1, 40)) + data[start_of_scan:]
    else:
        raise ValueError(f"unknown hard JPEG case {case!r}; choose one of {', '.join(HARD_JPEG_CASES)}")
    return buffer.getvalue()


def write_images(folder: Path, names: Iterable[str], size: int = 8) -> None:
    """Plain single-colour images (for layout tests that need files, not pictures)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(jpeg_bytes(size=size))


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(root: Path, shard: str, samples: list[dict], *, failed: int = 0, stats: bool = True) -> None:
    """An img2dataset webdataset shard: per sample ``{key, jpg?, txt?}`` the members <key>.jpg/.txt/.json,
    and <shard>_stats.json whose "successes" counts the samples and "count" also the ``failed`` downloads."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / f"{shard}.tar", "w") as tar:
        for sample in samples:
            key = sample["key"]
            if "jpg" in sample:
                _add_member(tar, f"{key}.jpg", sample["jpg"])
            if "txt" in sample:
                _add_member(tar, f"{key}.txt", sample["txt"].encode())
            _add_member(tar, f"{key}.json", json.dumps({"key": key, "status": "success",
                                                         "caption": sample.get("txt")}).encode())
    if stats:
        (root / f"{shard}_stats.json").write_text(json.dumps({
            "count": len(samples) + failed, "successes": len(samples), "failed_to_download": failed,
            "failed_to_resize": 0, "status_dict": {"success": len(samples)} | ({"error": failed} if failed else {}),
        }))


# --- the miniature paper datasets ----------------------------------------------------------------

class _Renderer:
    """Shapes-world pictures upscaled to a realistic JPEG size (short side around ``px``, varied aspect ratios)."""

    def __init__(self, px: int, seed: int):
        self.px = px
        self.rng = np.random.default_rng(seed)

    def upscale(self, image: Image.Image) -> Image.Image:
        aspect = float(self.rng.choice([1.0, 4 / 3, 3 / 2, 3 / 4]))
        short = round(self.px * float(self.rng.choice(SIZE_FACTORS)))
        width, height = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        return image.resize((width, height), Image.BICUBIC)

    def jpeg(self, image: Image.Image) -> bytes:
        return jpeg_bytes(self.upscale(image), quality=88)


def _indices_per_class(world: ShapesWorld, count: int, classes: Iterable[int]) -> dict[int, list[int]]:
    chosen = {label: np.flatnonzero(world.labels == label)[:count].tolist() for label in classes}
    short = [world.classes[label] for label, found in chosen.items() if len(found) < count]
    if short:
        raise ValueError(f"the shapes world has fewer than {count} images of {short}; lower --images-per-class")
    return chosen


def _world_size(count: int) -> str:
    return "3k" if count <= 200 else "12k"


def write_imagenet(root: Path, per_class: int, renderer: _Renderer, synset_mapping: bool) -> None:
    """root/train/<wnid>/<wnid>_<n>.JPEG, root/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG, root/real.json
    (the ReaL root is the ImageNet root), optionally root/LOC_synset_mapping.txt for all 1000 classes."""
    wnids = {label: SHAPE_WNIDS[OBJECTS[label]][0] for label in FIXTURE_LABELS}
    train = ShapesWorld("train", size=_world_size(per_class))
    for label, indices in _indices_per_class(train, per_class, FIXTURE_LABELS).items():
        folder = root / "train" / wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        for n, index in enumerate(indices):
            if n % HARD_CASE_EVERY == HARD_CASE_EVERY - 1:
                case = HARD_JPEG_CASES[(label + n // HARD_CASE_EVERY) % len(HARD_JPEG_CASES)]
                data = hard_jpeg(renderer.upscale(train[index]["image"]), case)
            else:
                data = renderer.jpeg(train[index]["image"])
            (folder / f"{wnids[label]}_{n}.JPEG").write_bytes(data)
    test = ShapesWorld("test")
    per_val_class = max(2, per_class // 4)
    val = sorted((index, label) for label, indices in
                 _indices_per_class(test, per_val_class, FIXTURE_LABELS).items() for index in indices)
    standard = imagenet_index()
    real = []
    for number, (index, label) in enumerate(val, start=1):  # val file numbers interleave classes, as the real ones
        folder = root / "val" / wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        item = test[index]
        (folder / f"ILSVRC2012_val_{number:08d}.JPEG").write_bytes(renderer.jpeg(item["image"]))
        # ReaL lists every class visible in the image (the distractor too, when the fixtures hold its class);
        # a few lists are empty.
        real.append([] if number % 17 == 0 else sorted(standard[wnids[c]] for c in set(item["real_labels"]) if c in wnids))
    (root / "real.json").write_text(json.dumps(real))
    if synset_mapping:
        from timm.data import ImageNetInfo

        lines = [f"{wnid} {name}" for wnid, name in zip(imagenet_wnids(), ImageNetInfo().label_descriptions(),
                                                        strict=True)]
        (root / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")


def write_training_images(root: Path, unique_per_class: int, image_px: int, total: int) -> None:
    """An ImageNet layout whose train folder holds ``total`` files for throughput measurements: the images
    ``write_imagenet`` renders (varied sizes, the hard cases), then hard links to them."""
    write_imagenet(root, unique_per_class, _Renderer(image_px, seed=0), synset_mapping=False)
    files = sorted((root / "train").rglob("*.JPEG"))
    for copy in range(len(files), total):
        source = files[copy % len(files)]
        os.link(source, source.with_name(f"{source.stem}_copy{copy}.JPEG"))


def write_imagenet9(root: Path, per_class: int, renderer: _Renderer) -> None:
    """root/<variant>/val/<NN_superclass>/*.JPEG for the five variants, and root/in_to_in9.json."""
    standard = imagenet_index()
    class_map = {str(i): -1 for i in range(len(standard))}
    for wnid, group in SHAPE_WNIDS.values():
        class_map[str(standard[wnid])] = IMAGENET9_CLASSES.index(group)
    (root / "in_to_in9.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "in_to_in9.json").write_text(json.dumps(class_map))
    count = max(2, per_class // 4)
    for variant in IMAGENET9_VARIANTS:
        world = ShapesWorld("test", variant=variant)
        for label, indices in _indices_per_class(world, count, FIXTURE_LABELS).items():
            group = SHAPE_WNIDS[OBJECTS[label]][1]
            folder = root / variant / "val" / f"{IMAGENET9_CLASSES.index(group):02d}_{group}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in indices:
                (folder / f"{variant}_{OBJECTS[label]}_{index}.JPEG").write_bytes(renderer.jpeg(world[index]["image"]))


def _red_frame(image: Image.Image) -> Image.Image:
    pixels = np.array(image)
    pixels[0, :], pixels[-1, :], pixels[:, 0], pixels[:, -1] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
    return Image.fromarray(pixels)


def write_objectnet(root: Path, per_class: int, renderer: _Renderer) -> None:
    """root/images/<folder>/*.png (1-pixel red frame) and root/mappings/ as in the ObjectNet release."""
    from timm.data import ImageNetInfo

    mappings = root / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    imagenet_names = ImageNetInfo().label_descriptions()
    (mappings / "imagenet_to_label_2012_v2").write_text("\n".join(imagenet_names) + "\n")
    name_of = dict(zip(imagenet_wnids(), imagenet_names, strict=True))
    folders = {shape: label.lower().replace(" ", "_") for shape, label in OBJECTNET_LABELS.items()}
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {label: name_of[SHAPE_WNIDS[shape][0]] for shape, label in OBJECTNET_LABELS.items()}, indent=1))
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps(
        {folders[shape]: label for shape, label in OBJECTNET_LABELS.items()} | dict([OBJECTNET_ONLY_LABEL]), indent=1))
    world = ShapesWorld("objectnet")
    count = max(2, per_class // 4)
    labels = [world.classes.index(name) for name in OBJECTNET_LABELS]
    for label, indices in _indices_per_class(world, count, labels).items():
        folder = root / "images" / folders[world.classes[label]]
        folder.mkdir(parents=True, exist_ok=True)
        for index in indices:
            _red_frame(renderer.upscale(world[index]["image"])).save(folder / f"{index:04d}.png")
    other = root / "images" / OBJECTNET_ONLY_LABEL[0]
    other.mkdir(parents=True, exist_ok=True)
    _red_frame(renderer.upscale(world[0]["image"])).save(other / "0000.png")


def write_mit_states(root: Path, per_class: int, renderer: _Renderer) -> None:
    """root/images/<"adjective noun">/*.jpg: colour as the state, shape as the object; "adj <noun>" folders
    hold images without an annotated state, as in the release."""
    world = ShapesWorld("test")
    count = max(2, per_class // 8)
    seen: dict[str, int] = {}
    for index in range(len(world)):
        if world.labels[index] not in FIXTURE_LABELS:
            continue
        item = world[index]
        folder = f"{COLOUR_NAMES[item['attribute']]} {OBJECTS[item['label']]}"
        if seen.get(folder, 0) >= count:
            continue
        seen[folder] = seen.get(folder, 0) + 1
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "images" / folder / f"{index}.jpg").write_bytes(renderer.jpeg(item["image"]))
    (root / "images" / f"adj {OBJECTS[0]}").mkdir(parents=True, exist_ok=True)
    (root / "images" / f"adj {OBJECTS[0]}" / "0.jpg").write_bytes(renderer.jpeg(world[0]["image"]))


def write_captioned_shards(root: Path, count: int, renderer: _Renderer, size: str) -> None:
    """img2dataset output: shards of CC_SHARD_SIZE slots, every CC_FAILED_DOWNLOAD_EVERY-th slot a failed
    download (absent from the tar, counted in the stats), keys <shard><4-digit slot> as img2dataset numbers them."""
    world = ShapesWorld("train", size=size)
    slots = range(min(count, len(world)))
    for first in range(0, len(slots), CC_SHARD_SIZE):
        shard = f"{first // CC_SHARD_SIZE:05d}"
        samples, failed = [], 0
        for slot in slots[first:first + CC_SHARD_SIZE]:
            if slot % CC_FAILED_DOWNLOAD_EVERY == CC_FAILED_DOWNLOAD_EVERY - 1:
                failed += 1
                continue
            item = world[slot]
            samples.append({"key": f"{shard}{slot - first:04d}", "jpg": renderer.jpeg(item["image"]),
                            "txt": item["caption"]})
        write_shard(root, shard, samples, failed=failed)


def write_fixtures(directory: Path, images_per_class: int = 20, image_px: int = 256,
                   synset_mapping: bool = False) -> dict[str, Path]:
    """Write every miniature dataset under ``directory`` and DIR/env.sh; returns the roots by dataset name."""
    if images_per_class < 4:
        raise ValueError(f"--images-per-class must be at least 4 (got {images_per_class}): val and test sets "
                         "take a quarter of it")
    directory = Path(directory).resolve()
    renderer = _Renderer(image_px, seed=0)
    roots = {"imagenet": directory / "imagenet", "imagenet_real": directory / "imagenet",
             "imagenet9": directory / "imagenet9", "objectnet": directory / "objectnet",
             "mit_states": directory / "mit_states", "cc3m": directory / "cc3m", "cc12m": directory / "cc12m"}
    existing = [name for name, root in roots.items() if root.exists()]
    if existing:
        raise FileExistsError(f"{directory} already holds {', '.join(sorted(set(existing)))}; "
                              "write the fixtures into a new directory")
    write_imagenet(roots["imagenet"], images_per_class, renderer, synset_mapping)
    write_imagenet9(roots["imagenet9"], images_per_class, renderer)
    write_objectnet(roots["objectnet"], images_per_class, renderer)
    write_mit_states(roots["mit_states"], images_per_class, renderer)
    cc_samples = images_per_class * len(SHAPE_WNIDS)
    write_captioned_shards(roots["cc3m"], cc_samples, renderer, "3k")
    write_captioned_shards(roots["cc12m"], 2 * cc_samples, renderer, "12k")
    exports = [f"export XSAMPLE_{name.upper()}_ROOT={shlex.quote(str(roots[name]))}" for name in ENV_NAMES]
    (directory / "env.sh").write_text("# Miniature paper datasets (python -m xsample.data.fixtures)\n"
                                      + "\n".join(exports) + "\n")
    return roots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xsample.data.fixtures", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--images-per-class", type=int, default=20,
                        help="ImageNet train images per class (val, ImageNet-9, ObjectNet: a quarter of it)")
    parser.add_argument("--image-px", type=int, default=256, help="short side of the written images")
    parser.add_argument("--synset-mapping", action="store_true",
                        help="also write imagenet/LOC_synset_mapping.txt (the loaders do not need it)")
    args = parser.parse_args(argv)
    try:
        write_fixtures(args.directory, args.images_per_class, args.image_px, args.synset_mapping)
    except (ValueError, FileExistsError) as error:
        raise SystemExit(f"xsample.data.fixtures: {error}") from None
    print(f"wrote miniature paper datasets to {args.directory}; run: source {args.directory / 'env.sh'}")


if __name__ == "__main__":
    main()
