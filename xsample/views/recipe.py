"""The training views' augmentation recipes and the evaluation transform's sizes, for 28-32 px tiny images and
224 px paper images alike (sizes scale with the image).

A recipe (``AugmentRecipe``, from configs/augment/*.yaml) is a random resized crop and a horizontal flip,
then either SimCLR's colour distortion (colour jitter, grayscale) and Gaussian blur at a given strength,
or torchvision's AutoAugment policy. pil.py builds its PIL version (per image, in DataLoader workers);
batched.py draws the same law in batched tensor operations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from xsample.config import Augment, Blur, ColourJitter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = (3 / 4, 4 / 3)  # every recipe's crop aspect-ratio range (torchvision's RandomResizedCrop default)


def autoaugment_policies() -> tuple[str, ...]:
    """torchvision's AutoAugment policy names. Read when a recipe names one: importing torchvision takes seconds,
    which the planner on a login node would otherwise pay for every recipe."""
    from torchvision.transforms import AutoAugmentPolicy

    return tuple(policy.value for policy in AutoAugmentPolicy)


@dataclass(frozen=True)
class AugmentRecipe:
    """One augmentation recipe (a configs/augment/ choice), the same value for the PIL and the batched path.
    After the crop and the flip: colour jitter, grayscale and blur (each absent or at probability 0 when
    the recipe has none), or ``autoaugment``, a torchvision ``AutoAugmentPolicy`` value, alone."""

    name: str
    colour_jitter: ColourJitter | None
    grayscale_probability: float
    blur: Blur | None
    autoaugment: str | None

    @classmethod
    def of(cls, augment: Augment) -> AugmentRecipe:
        """The recipe of a parsed run config's ``augment`` section, its ranges checked as ``from_config``'s."""
        return cls.from_config(dataclasses.asdict(augment))

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> AugmentRecipe:
        """The recipe of a run config's ``augment`` section; ValueError with one line naming what is wrong."""
        fields = ("name", "colour_jitter", "grayscale_probability", "blur", "autoaugment")
        if not isinstance(section, dict) or set(section) != set(fields):
            keys = sorted(section) if isinstance(section, dict) else section
            raise ValueError(f"augment must have exactly the keys {', '.join(fields)} (configs/augment/*.yaml), got {keys}")
        try:
            jitter = section["colour_jitter"]
            blur = section["blur"]
            recipe = cls(
                name=str(section["name"]),
                colour_jitter=None if jitter is None else ColourJitter(**{k: float(v) for k, v in jitter.items()}),
                grayscale_probability=float(section["grayscale_probability"]),
                blur=None if blur is None else Blur(float(blur["probability"]), tuple(float(s) for s in blur["sigma"])),
                autoaugment=section["autoaugment"],
            )
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"augment ({section.get('name')}) is malformed: {error}; see configs/augment/*.yaml") from None
        problem = recipe.problem()
        if problem is not None:
            raise ValueError(problem)
        return recipe

    def problem(self) -> str | None:
        """The line that says which value is out of range, or None."""
        jitter, blur = self.colour_jitter, self.blur
        probabilities = {"grayscale_probability": self.grayscale_probability}
        if jitter is not None:
            probabilities["colour_jitter.probability"] = jitter.probability
            if min(jitter.brightness, jitter.contrast, jitter.saturation) < 0 or not 0 <= jitter.hue <= 0.5:
                return (f"augment.colour_jitter ({self.name}): brightness, contrast and saturation must be >= 0 and hue "
                        f"in [0, 0.5], got {jitter}")
        if blur is not None:
            probabilities["blur.probability"] = blur.probability
            if len(blur.sigma) != 2 or not 0 < blur.sigma[0] <= blur.sigma[1]:
                return f"augment.blur.sigma ({self.name}) must be [low, high] with 0 < low <= high, got {list(blur.sigma)}"
        for key, value in probabilities.items():
            if not 0 <= value <= 1:
                return f"augment.{key} ({self.name}) must be in [0, 1], got {value}"
        if self.autoaugment is not None:
            policies = autoaugment_policies()
            if self.autoaugment not in policies:
                return f"augment.autoaugment={self.autoaugment!r} is not a policy; use one of {', '.join(policies)} or null"
            if jitter is not None or blur is not None or self.grayscale_probability:
                return (f"augment ({self.name}): autoaugment replaces the colour distortion; set colour_jitter and blur "
                        "to null and grayscale_probability to 0")
        return None


def _blur_kernel(image_size: int) -> int:
    """SimCLR blurs with a kernel of ~10% of the image side; it must be odd."""
    kernel = max(3, int(0.1 * image_size))
    return kernel if kernel % 2 else kernel + 1


def default_min_crop_scale(image_size: int) -> float:
    """Tiny images keep at least 20% of their area per crop (8% is SimCLR's choice at 224 px, where
    a small crop still holds enough pixels)."""
    return 0.08 if image_size >= 128 else 0.2


def eval_resize(image_size: int) -> int:
    """The short side the evaluation transform resizes to before its centre crop: 8/7 of the crop (256 for
    224); tiny images are only resized."""
    return int(round(image_size * 256 / 224)) if image_size >= 128 else image_size
