"""Image transforms: the SimCLR augmentation recipe and the evaluation transform, for 28-32 px
tiny images and 224 px paper images alike (sizes scale with the image)."""

from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The SimCLR recipe's settings, shared by this PIL recipe and the batched one (batched_augment.py).
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
JITTER_PROBABILITY, GRAYSCALE_PROBABILITY, BLUR_PROBABILITY = 0.8, 0.2, 0.5
BLUR_SIGMA = (0.1, 2.0)


def _blur_kernel(image_size: int) -> int:
    """SimCLR blurs with a kernel of ~10% of the image side; it must be odd."""
    kernel = max(3, int(0.1 * image_size))
    return kernel if kernel % 2 else kernel + 1


def default_min_crop_scale(image_size: int) -> float:
    """Tiny images keep at least 20% of their area per crop (8% is SimCLR's choice at 224 px, where
    a small crop still holds enough pixels)."""
    return 0.08 if image_size >= 128 else 0.2


def simclr_augmentation(image_size: int, min_crop_scale: float | None = None) -> T.Compose:
    """Random resized crop, flip, colour jitter, grayscale, blur (Chen et al. 2020)."""
    if min_crop_scale is None:
        min_crop_scale = default_min_crop_scale(image_size)
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(min_crop_scale, 1.0), ratio=CROP_RATIO, antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(**JITTER)], p=JITTER_PROBABILITY),
        T.RandomGrayscale(p=GRAYSCALE_PROBABILITY),
        T.RandomApply([T.GaussianBlur(_blur_kernel(image_size), sigma=BLUR_SIGMA)], p=BLUR_PROBABILITY),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_resize(image_size: int) -> int:
    """The short side the evaluation transform resizes to before its centre crop: 8/7 of the crop (256 for
    224); tiny images are only resized."""
    return int(round(image_size * 256 / 224)) if image_size >= 128 else image_size


def eval_transform(image_size: int) -> T.Compose:
    """Resize the short side to ``eval_resize`` and centre-crop, as the probes expect."""
    return T.Compose([
        T.Resize(eval_resize(image_size), antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
