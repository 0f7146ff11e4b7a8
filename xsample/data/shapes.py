"""A procedural captioned world standing in for image-caption corpora, none of which installs offline.

Each 32 x 32 image shows one object with attributes (colour, size) on a background texture, sometimes with
a small distractor object. Objects come in *families* (dogs, birds, fish, ...): the members of a family share
a silhouette and differ by their fill texture (solid, striped, dotted, checked), and their names are words a
sentence encoder places near each other. Everything is rendered deterministically from
(split seed, index), and the caption is written from the attributes with varied templates. Backgrounds
correlate with the family (its habitat) in the training data, as ImageNet-9's backgrounds correlate with
its super-classes, and the foreground mask is known, so the test split yields original / only_fg / no_fg /
mixed_same / mixed_rand variants. Colour is an attribute label (MIT-States analog), the distractor makes
some images multi-label (ImageNet-ReaL analog), and an "objectnet" split renders rotated objects on unseen
backgrounds for a subset of the classes. One member of every family is held out of the pretraining splits
("train", "test", "objectnet"); the "heldout" split holds only those classes, for evaluations of how a
representation transfers to classes it never saw.

Why the world looks the way it does (each property is taken from the real data the analog stands for,
never chosen to favour a method):
- Object scale (radius 9 or 13 px of 32; was 6 or 10.5): ImageNet photos are object-centric, the labelled
  object usually fills a large part of the frame. At the old scale a small object was ~12 px wide, and
  after SimCLR's random crops (down to 20% of the area) and a stride-2 stem only a few pixels of outline
  were left: a supervised classifier on 3k images still ignored shape after 200 steps (test accuracy ~57%,
  objects on random backgrounds ~16%), so every method measured background statistics only.
- Families (MEASUREMENTS below): X-CLR's claims are about what *between-class* similarity adds, and the
  paper's class-name graph has plenty of it (many near-duplicate classes: dog breeds, sharks, beetles).
  The first version of this world had 10 shape names ("circle", "ring", ...): MiniLM put them all at
  0.35-0.69 of each other, and at the tiny batch 91% of an X-CLR target row landed on same-class samples,
  so X-CLR was SupCon by construction (issue 20). Here 8 families of 4 common nouns give the graph a
  structure that the pixels share: siblings look alike, and their names sit closer together than
  strangers' (measured below, "a photo of a {}" through all-MiniLM-L6-v2).
- Backgrounds: each family has a typical background 40% of the time, so background alone predicts the
  family with ~47% accuracy (Bayes: 0.4 + 0.6 / 8), like ImageNet-9, where backgrounds alone give roughly
  40% on its 9 super-classes: predictive but not the whole story, which is what its variants measure.
- Held-out classes: the held-out member of family f carries texture f mod 4, so every texture and every
  silhouette is seen in pretraining, only not that combination (a new dog breed, not a new kind of thing).

MEASUREMENTS (2026-12-06, issue 20):
- Names ("a photo of a {}", all-MiniLM-L6-v2, the 32 classes): mean similarity 0.62 within a family, 0.38
  between families; every class's nearest name is a sibling's.
- X-CLR's targets at the tiny batch (64) on the 24 pretraining classes, graph diagnostics over 8 batches:
  graph_temperature 0.1 puts 0.88 of a row on same-class samples (0.19 on the other view), so 0.25 is the tiny
  profile's value: 0.32 / 0.055, against the paper profile's 0.335 / 0.039 (1000 ImageNet class names, batch
  4096, graph_temperature 0.1); configs/datasets/imagenet.yaml records the scan.
- One seed of tiny Table 1 (12 epochs, seed 0; probe top1 on the test split / on the held-out classes):
  untrained 34.3 / 50.8, SimCLR 39.8 / 57.5, SupCon 59.1 / -, X-CLR 63.0 / 76.6 (seed 1: 58.2 / 75.3), X-CLR
  with its class rows permuted (sanity=permuted_graph) 55.8 / 71.6 (seed 1: 64.0 / 77.1). Seeds differ by more
  than the pair does: two seeds do not show the permuted graph losing anything. Shorter runs do not resolve it: at
  4 epochs (same seed for both) real - permuted on the held-out classes was +5.6 (seed 0) and -6.8 (seed 1).
- Five seeds of X-CLR on the real graph and on its permuted rows (12 epochs; mean +- std; real - permuted against
  the half-width of its 95% Welch interval, the reports' verdict rule): graph_alignment 14.4 +- 4.1 vs 1.6 +- 2.1
  (+12.8 vs 5.1: the graph's values reach the representation, and the permutation removes them); held-out classes
  k-NN 69.4 +- 3.1 vs 72.0 +- 5.2 (-2.7 vs 6.5), probe 73.3 vs 75.3 (-2.0 vs 6.2); few labels 1% 24.9 vs 26.2
  (-1.3 vs 7.7), 10% 41.7 vs 44.7 (-3.0 vs 9.0); test-split probe 62.7 vs 60.2 (+2.4 vs 7.5). So the
  between-class values shape the representation but buy nothing measurable in telling unseen classes apart, or
  with few labels.
- Where a held-out class lands (heldout_classes.family_knn_top1: a 20-NN vote over the seen training items names
  the held-out image's family; chance 12.5, 3 of 24 seen classes are siblings): X-CLR 27.2 +- 5.5, permuted graph
  11.9 +- 4.2 (+15.3 vs 7.2; real above permuted in every seed, by 8.7 to 19.9), SupCon 7.9 +- 1.5, SimCLR
  33.6 +- 2.3, untrained 36.6 +- 1.2. SupCon, trained to tell siblings apart by texture alone, puts a new
  member next to the strangers that share its texture (below chance); X-CLR's graph keeps it among its relatives;
  the label-free methods, which never learned to ignore the shared silhouette, keep it there most.
  (This evaluation was added after the held-out k-NN and few-label columns had shown nothing, on the saved
  checkpoints of these runs; an unweighted vote and a nearest-class-mean rule gave the same ordering.)
- Against SupCon (5 seeds each, X-CLR - SupCon vs the 95% interval): held-out k-NN -5.7 vs 4.0 and 1% labels -4.8
  vs 4.7 (SupCon ahead); held-out family +19.4 vs 6.7, MIT-States attributes +7.3 vs 7.0, graph_alignment +12.0
  vs 5.1, ImageNet-9 no_fg +5.1 vs 1.9 (X-CLR ahead); test-split probe +0.9, held-out probe -5.3, bg_gap +2.0,
  ObjectNet -1.1 (unresolved).
- Tiny Table 1 in this world (experiments/preview.py --tables 1, 27 runs, 2026-12-06): untrained 32.9, SimCLR
  40.6, SupCon 61.7, X-CLR 62.7; shuffled-label SupCon 26.3 and misaligned-graph X-CLR 29.5 fall below SimCLR;
  all 9 known-answer checks pass.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from xsample.data.caption_noise import caption_donors, check_caption_noise
from xsample.data.items import RGB_PIXELS
from xsample.data.registry import check_split, register_dataset

IMAGE_SIZE = 32
# family -> (silhouette, typical background, members in TEXTURES order)
FAMILIES = {
    "dog": ("circle", "grassy", ("terrier", "poodle", "beagle", "collie")),
    "bird": ("triangle", "sky", ("sparrow", "robin", "finch", "owl")),
    "fish": ("bar", "watery", ("salmon", "trout", "tuna", "goldfish")),
    "tree": ("star", "snowy", ("oak", "pine", "maple", "birch")),
    "vehicle": ("square", "brick", ("car", "truck", "bus", "van")),
    "insect": ("cross", "sandy", ("beetle", "ant", "bee", "wasp")),
    "instrument": ("heart", "wooden", ("guitar", "violin", "cello", "harp")),
    "fruit": ("crescent", "rocky", ("apple", "pear", "cherry", "plum")),
}
# A member's fill texture, the only thing that tells it from its siblings (as fur or plumage tells breeds apart).
TEXTURES = ("solid", "striped", "dotted", "checked")
FAMILY_NAMES = list(FAMILIES)


def _classes(held_out: bool) -> list[tuple[str, int, int]]:
    """(name, family, texture) of the pretraining classes, or of the held-out ones (texture = family mod 4)."""
    return [(member, family, texture) for family, (_, _, members) in enumerate(FAMILIES.values())
            for texture, member in enumerate(members) if (texture == family % len(TEXTURES)) == held_out]


SEEN = _classes(held_out=False)
HELD_OUT = _classes(held_out=True)
OBJECTS = [name for name, _, _ in SEEN]
HELD_OUT_OBJECTS = [name for name, _, _ in HELD_OUT]
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40),
           "purple": (150, 60, 200), "orange": (250, 140, 20), "white": (245, 245, 245), "cyan": (40, 220, 220)}
COLOUR_NAMES = list(COLOURS)
SIZES = {"small": 9.0, "large": 13.0}
BACKGROUNDS = [background for _, background, _ in FAMILIES.values()]
UNSEEN_BACKGROUNDS = ["checkered", "night"]  # only in the objectnet split
# The ObjectNet analog covers 6 of the 8 families, as ObjectNet covers part of ImageNet's classes.
OBJECTNET_CLASSES = [name for name, family, _ in SEEN if family < 6]
VARIANTS = ("original", "only_fg", "no_fg", "mixed_same", "mixed_rand")
SPLIT_SEEDS = {"train": 1, "test": 2, "objectnet": 3, "heldout": 4}
TRAIN_SIZES = {"3k": 3000, "12k": 12000}
SPLIT_SIZES = {"test": 2000, "objectnet": 1000, "heldout": 1600}
TYPICAL_BACKGROUND_PROBABILITY = 0.4
DISTRACTOR_PROBABILITY = 0.3
CAPTION_TEMPLATES = [
    "a {size} {colour} {texture} {object} on a {background} background",
    "a photo of a {colour} {object} over a {background} texture",
    "{texture} {colour} {object}, {size}, {background} backdrop",
    "there is a {size} {object} in {colour} with a {texture} fill",
    "a {colour} {object} drawn {texture} against a {background} scene",
]
# Zero-shot prompts in the captions' own phrasing with the attributes left out (eval.zero_shot.templates=
# shapes_captions): a CLIP model trained on these captions has never read open_clip's ImageNet prompts.
ZERO_SHOT_TEMPLATES = [
    "a photo of a {}",
    "a {} on a background",
    "there is a {}",
    "a {} drawn against a scene",
]

_GRID = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
_SILHOUETTES = {
    "circle": lambda x, y, r, theta: r < 1.0,
    "square": lambda x, y, r, theta: np.maximum(abs(x), abs(y)) < 0.8,
    "triangle": lambda x, y, r, theta: (y < 0.7) & (abs(x) < (y + 1.0) * 0.55),
    "cross": lambda x, y, r, theta: ((abs(x) < 0.33) & (abs(y) < 1.0)) | ((abs(y) < 0.33) & (abs(x) < 1.0)),
    "star": lambda x, y, r, theta: r < 0.55 + 0.45 * np.cos(5 * theta),
    "crescent": lambda x, y, r, theta: (r < 1.0) & (np.hypot(x - 0.45, y + 0.2) > 0.75),
    "heart": lambda x, y, r, theta: (x**2 + (-y * 1.1 + 0.25) ** 2 - 0.6) ** 3 - x**2 * (-y * 1.1 + 0.25) ** 3 < 0,
    "bar": lambda x, y, r, theta: (abs(x) < 1.0) & (abs(y) < 0.45),
}


def _silhouette(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _SILHOUETTES[kind](x, y, np.hypot(x, y), np.arctan2(y, x))


def _shape_mask(kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    y, x = (_GRID[0] - cy) / radius, (_GRID[1] - cx) / radius
    if angle:
        x, y = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
    return _silhouette(kind, x, y)


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    y, x = _GRID
    noise = rng.normal(0, 1, (IMAGE_SIZE, IMAGE_SIZE))
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "wooden":
        t = 0.5 + 0.5 * np.sin(x * 0.9 + 2 * np.sin(y * 0.2) + phase)
        base = np.stack([110 + 60 * t, 70 + 35 * t, 30 + 15 * t], -1)
    elif kind == "grassy":
        base = np.stack([40 + 15 * noise, 120 + 35 * noise, 40 + 15 * noise], -1)
    elif kind == "sky":
        t = y / IMAGE_SIZE
        base = np.stack([120 + 80 * t, 170 + 60 * t, 250 - 10 * t], -1) + 4 * noise[..., None]
    elif kind == "brick":
        mortar = ((y % 8) < 1) | (((x + 8 * ((y // 8) % 2)) % 16) < 1)
        base = np.where(mortar[..., None], [200, 200, 190], [160, 60, 45]) + 8 * noise[..., None]
    elif kind == "sandy":
        base = np.stack([220 + 12 * noise, 195 + 12 * noise, 140 + 10 * noise], -1)
    elif kind == "watery":
        t = 0.5 + 0.5 * np.sin(y * 1.1 + np.sin(x * 0.4 + phase) * 2)
        base = np.stack([30 + 30 * t, 90 + 50 * t, 170 + 60 * t], -1)
    elif kind == "snowy":
        flakes = (rng.random((IMAGE_SIZE, IMAGE_SIZE)) > 0.9)[..., None]
        base = np.where(flakes, [255, 255, 255], [205, 215, 230]) + 6 * noise[..., None]
    elif kind == "rocky":
        coarse = np.kron(rng.normal(0, 1, (IMAGE_SIZE // 4, IMAGE_SIZE // 4)), np.ones((4, 4)))
        base = (np.stack([115 + 0 * coarse, 110 + 0 * coarse, 100 + 0 * coarse], -1) + 30 * coarse[..., None]
                + 6 * noise[..., None])
    elif kind == "checkered":
        checks = ((x // 4 + y // 4) % 2)[..., None]
        base = np.where(checks > 0, [200, 200, 200], [90, 90, 90]) + 5 * noise[..., None]
    else:  # night
        stars = (rng.random((IMAGE_SIZE, IMAGE_SIZE)) > 0.97)[..., None]
        base = np.where(stars, [230, 230, 200], [15, 15, 40]) + 5 * noise[..., None]
    return np.clip(base, 0, 255)


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], texture: str) -> None:
    y, x = _GRID
    fill = np.broadcast_to(np.asarray(colour, np.float32), canvas.shape).copy()
    # Coarse enough to survive the augmentation's blur and crops at 32 px.
    if texture == "striped":
        fill[((x + y) // 4) % 2 == 0] *= 0.4
    elif texture == "dotted":
        fill[((x % 6) < 3) & ((y % 6) < 3)] *= 0.4
    elif texture == "checked":
        fill[((x // 4) + (y // 4)) % 2 == 0] *= 0.4
    canvas[mask] = fill[mask]


class ShapesWorld(Dataset):
    attribute_names = COLOUR_NAMES
    family_names = FAMILY_NAMES

    def __init__(self, split: str, size: str = "3k", variant: str = "original", caption_noise: float = 0.0,
                 seed: int = 0):
        check_split("shapes", split, tuple(SPLIT_SEEDS))
        if size not in TRAIN_SIZES:
            raise ValueError(f"shapes size must be one of {', '.join(TRAIN_SIZES)}, got {size!r}")
        if variant not in VARIANTS:
            raise ValueError(f"shapes variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        check_caption_noise(caption_noise)
        self.split, self.variant, self.seed = split, variant, seed
        self.length = TRAIN_SIZES[size] if split == "train" else SPLIT_SIZES[split]
        kinds = {"heldout": HELD_OUT, "objectnet": [c for c in SEEN if c[0] in OBJECTNET_CLASSES]}.get(split, SEEN)
        self.classes = [name for name, _, _ in kinds]
        self.class_names = self.classes
        self.class_families = [family for _, family, _ in kinds]
        self.class_textures = [TEXTURES[texture] for _, _, texture in kinds]
        self.scenes = [self._scene(i) for i in range(self.length)]
        self.labels = np.asarray([scene["label"] for scene in self.scenes])
        self.captions = [self._caption(i, scene) for i, scene in enumerate(self.scenes)]
        self._corrupt_captions(float(caption_noise))
        # Rendered once (9 MB per 3k images): drawing a scene costs as much as both of its training views.
        self.pixels = np.stack([self._render(index) for index in range(self.length)])

    # --- scene description -------------------------------------------------------------------
    def _rng(self, index: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_SEEDS[self.split], index, stream])

    def _scene(self, index: int) -> dict:
        rng = self._rng(index)
        label = int(rng.integers(len(self.classes)))
        if self.split == "objectnet":
            background = UNSEEN_BACKGROUNDS[int(rng.integers(len(UNSEEN_BACKGROUNDS)))]
        else:
            background = self._background_for(label, rng)
        size = "small" if rng.random() < 0.5 else "large"
        radius = SIZES[size]
        scene = {
            "label": label, "object": self.classes[label], "colour": int(rng.integers(len(COLOURS))),
            "size": size, "texture": self.class_textures[label], "background": background,
            "cx": float(rng.uniform(radius, IMAGE_SIZE - radius)), "cy": float(rng.uniform(radius, IMAGE_SIZE - radius)),
            "angle": float(rng.uniform(0.3, 2 * np.pi - 0.3)) if self.split == "objectnet" else 0.0,
            "distractor": None,
        }
        if rng.random() < DISTRACTOR_PROBABILITY:
            other = int(rng.integers(len(self.classes) - 1))
            other += other >= label
            corner = (4.0, 4.0) if scene["cx"] > IMAGE_SIZE / 2 else (IMAGE_SIZE - 5.0, 4.0)
            scene["distractor"] = {"label": other, "cx": corner[0], "cy": corner[1],
                                   "colour": int(rng.integers(len(COLOURS)))}
        return scene

    def _background_for(self, label: int, rng: np.random.Generator) -> str:
        """Each family has a typical background (its habitat) part of the time, as ImageNet-9's super-classes do."""
        if rng.random() < TYPICAL_BACKGROUND_PROBABILITY:
            return BACKGROUNDS[self.class_families[label]]
        return BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]

    def _caption(self, index: int, scene: dict) -> str:
        template = CAPTION_TEMPLATES[int(self._rng(index, 3).integers(len(CAPTION_TEMPLATES)))]
        caption = template.format(size=scene["size"], colour=COLOUR_NAMES[scene["colour"]], texture=scene["texture"],
                                  object=scene["object"], background=scene["background"])
        if scene["distractor"] is not None:
            caption += f" next to a small {self.classes[scene['distractor']['label']]}"
        return caption

    def _corrupt_captions(self, fraction: float) -> None:
        """A seeded fraction of the samples takes another sample's caption (xsample.data.caption_noise)."""
        donors = caption_donors(self.length, fraction, seed=[self.seed, SPLIT_SEEDS[self.split], 99])
        self.captions = [self.captions[donor] for donor in donors]

    # --- rendering -----------------------------------------------------------------------------
    def _mask(self, label: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
        return _shape_mask(FAMILIES[FAMILY_NAMES[self.class_families[label]]][0], cx, cy, radius, angle)

    def _render(self, index: int) -> np.ndarray:
        scene = self.scenes[index]
        mask = self._mask(scene["label"], scene["cx"], scene["cy"], SIZES[scene["size"]], scene["angle"])
        if self.variant in ("mixed_same", "mixed_rand"):
            rng = self._rng(index, 1)
            label = scene["label"] if self.variant == "mixed_same" else int(rng.integers(len(self.classes)))
            background = _background(self._background_for(label, rng), rng)
        else:
            background = _background(scene["background"], self._rng(index, 2))
        if self.variant == "only_fg":
            background = np.zeros_like(background)
        canvas = background.astype(np.float32)
        if self.variant == "no_fg":
            canvas[mask] = 0.0
            return canvas.astype(np.uint8)
        _paint(canvas, mask, COLOURS[COLOUR_NAMES[scene["colour"]]], scene["texture"])
        distractor = scene["distractor"]
        if distractor is not None and self.variant == "original":
            small = self._mask(distractor["label"], distractor["cx"], distractor["cy"], 3.5, 0.0)
            _paint(canvas, small & ~mask, COLOURS[COLOUR_NAMES[distractor["colour"]]], self.class_textures[distractor["label"]])
        return canvas.astype(np.uint8)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        scene = self.scenes[index]
        real = [scene["label"]] + ([scene["distractor"]["label"]] if scene["distractor"] and self.variant == "original" else [])
        return {"image": Image.fromarray(self.pixels[index], mode="RGB"), RGB_PIXELS: self.pixels[index],
                "index": index, "label": scene["label"],
                "caption": self.captions[index], "attribute": scene["colour"], "real_labels": real,
                "family": self.class_families[scene["label"]]}


@register_dataset("shapes")
@lru_cache(maxsize=16)
def build_shapes(split: str, root=None, size: str = "3k", variant: str = "original", caption_noise: float = 0.0,
                 seed: int = 0) -> ShapesWorld:
    """One world per setting in a process (worlds are never modified): a run's evaluation reads the training
    split it trained on, and a local sweep's runs share the test variants, whose rendering cost a tiny Table 1
    run about half its evaluation time."""
    return ShapesWorld(split, size=size, variant=variant, caption_noise=caption_noise, seed=seed)
