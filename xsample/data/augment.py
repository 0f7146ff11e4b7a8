"""Image transforms: the SimCLR augmentation recipe and the evaluation transform, for 28-32 px
tiny images and 224 px paper images alike (sizes scale with the image)."""

from __future__ import annotations

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _blur_kernel(image_size: int) -> int:
    """SimCLR blurs with a kernel of ~10% of the image side; it must be odd."""
    kernel = max(3, int(0.1 * image_size))
    return kernel if kernel % 2 else kernel + 1


def simclr_augmentation(image_size: int, min_crop_scale: float | None = None) -> T.Compose:
    """Random resized crop, flip, colour jitter, grayscale, blur (Chen et al. 2020).

    Tiny images keep at least 20% of their area per crop (8% is SimCLR's choice at 224 px, where
    a small crop still holds enough pixels)."""
    if min_crop_scale is None:
        min_crop_scale = 0.08 if image_size >= 128 else 0.2
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(min_crop_scale, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(_blur_kernel(image_size), sigma=(0.1, 2.0))], p=0.5),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(image_size: int) -> T.Compose:
    """Resize the short side to 8/7 of the crop (256 for 224) and centre-crop, as the probes expect;
    tiny images are only resized."""
    resize = int(round(image_size * 256 / 224)) if image_size >= 128 else image_size
    return T.Compose([
        T.Resize(resize, antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
