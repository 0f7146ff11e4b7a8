"""The augmentation recipes of ``pil.training_augmentation`` as batched tensor operations on the training device.

DataLoader workers only read (and, off the GPU, decode) images; every view of a batch is then drawn
in a handful of batched operations on the device the batch trains on (by the training process on a
GPU, by the workers' collate when training on the CPU): one ``roi_align`` for all random resized
crops, then flip, colour jitter (per-sample random order), grayscale, Gaussian blur (per-sample
sigma, separable grouped convolution) and normalisation. An AutoAugment recipe instead applies each
view's drawn sub-policy to uint8 pixels, as the PIL path's AutoAugment sees them: per stage, the views
drawing a geometric operation go through one ``grid_sample`` (torchvision's matrices), the others are
grouped by operation and magnitude (host-side, from the drawn decisions), one
``torchvision.transforms.v2.functional`` call per group.

Randomness: each sample carries the seed its PIL views would have used (from seed, epoch, index);
every random number of view ``v`` is the ``v * DRAWS_PER_VIEW + j``-th output of SplitMix64 started at
that seed. So the views of a sample do not depend on worker count, batch composition or device, and a
resumed run draws the views an uninterrupted run would have drawn.

No step waits for the device: which views each operation touches is known on the host (the view
parameters are drawn there), so the index arrays travel with the parameters in one asynchronous copy;
nothing is read back. Workers hand over a batch as one flat uint8 tensor plus host-side offsets and
sizes (one shared-memory segment per batch, not one per image). An image the batched decoder and PIL
both refuse is replaced by another image of the batch and flagged in ``skipped``, like an unreadable file.

Images are loaded with their longest side capped (FFCV-style maximum resolution), so that a batch of
differently sized images pads to a bounded size; crop boxes are drawn on each image's original size
and scaled onto the loaded pixels, so the crop law is torchvision's relative to the original image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align
from torchvision.transforms import functional as TF
from torchvision.transforms import v2

from xsample.config import Blur, ColourJitter
from xsample.data.decode import (
    CorruptImageError,
    EncodedImage,
    UnreadableRunError,
    decode_on_cpu,
    is_complete_jpeg,
    pil_to_uint8,
)
from xsample.data.items import RGB_PIXELS, item_fields
from xsample.views.recipe import (
    CROP_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentRecipe,
    _blur_kernel,
    default_min_crop_scale,
    eval_resize,
)

log = logging.getLogger(__name__)

CROP_TRIES = 10  # torchvision RandomResizedCrop's attempts before its centre-crop fallback
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale

# Layout of one view's uniform draws.
_CROP_AREA, _CROP_RATIO = slice(0, 2 * CROP_TRIES, 2), slice(1, 2 * CROP_TRIES, 2)
_CROP_TOP, _CROP_LEFT = 2 * CROP_TRIES, 2 * CROP_TRIES + 1
_FLIP, _JITTER, _ORDER, _FACTORS = 22, 23, slice(24, 28), slice(28, 32)
_GRAY, _BLUR, _SIGMA = 32, 33, 34
# An AutoAugment recipe has no jitter: its sub-policy, the two operations' application and signs reuse those slots.
_SUB_POLICY, _OP_APPLIED, _OP_SIGN = 23, slice(24, 26), slice(26, 28)
DRAWS_PER_VIEW = 35

_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)
_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def max_loaded_side(image_size: int) -> int:
    """Longest side images are loaded at: twice the evaluation resize (512 for 224 px crops)."""
    return 2 * int(round(image_size * 256 / 224))


def pack_images(images: list[Tensor]) -> dict:
    """Images of differing sizes as one flat uint8 tensor with host-side offsets and sizes (``unpack``
    undoes it): ``(3, H, W)`` pixels, or 1-D JPEG bytes, whose size is (0, 0) until decoded."""
    lengths = np.array([image.numel() for image in images], dtype=np.int64)
    return {"pixels": torch.cat([image.reshape(-1) for image in images]),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]),
            "loaded_size": np.array([image.shape[1:] if image.dim() == 3 else (0, 0) for image in images],
                                    dtype=np.int64)}


def splitmix_uniforms(seeds: np.ndarray, count: int) -> np.ndarray:
    """``(len(seeds), count)`` uniforms in [0, 1): the first ``count`` SplitMix64 outputs of each seed."""
    with np.errstate(over="ignore"):
        state = np.asarray(seeds, dtype=np.uint64)[:, None] + _SPLITMIX_GAMMA * np.arange(1, count + 1, dtype=np.uint64)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def crop_windows(draws: np.ndarray, heights: np.ndarray, widths: np.ndarray,
                 scale: tuple[float, float], ratio: tuple[float, float] = CROP_RATIO) -> np.ndarray:
    """``(K, 4)`` integer windows (top, left, height, width): ``RandomResizedCrop.get_params`` for K images
    at once, from each row's draws (10 tries of area and log-ratio, then the centre-crop fallback)."""
    heights, widths = heights.astype(np.int64), widths.astype(np.int64)
    area = (heights * widths)[:, None]
    target_area = area * (scale[0] + (scale[1] - scale[0]) * draws[:, _CROP_AREA])
    log_low, log_high = np.log(ratio[0]), np.log(ratio[1])
    aspect = np.exp(log_low + (log_high - log_low) * draws[:, _CROP_RATIO])
    tried_w = np.round(np.sqrt(target_area * aspect)).astype(np.int64)
    tried_h = np.round(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (tried_w > 0) & (tried_w <= widths[:, None]) & (tried_h > 0) & (tried_h <= heights[:, None])
    first = fits.argmax(axis=1)
    rows = np.arange(len(draws))
    h, w = tried_h[rows, first], tried_w[rows, first]
    top = np.floor(draws[:, _CROP_TOP] * (heights - h + 1)).astype(np.int64)
    left = np.floor(draws[:, _CROP_LEFT] * (widths - w + 1)).astype(np.int64)

    # No try fitted: the largest centred crop whose ratio is within bounds.
    in_ratio = widths / heights
    fallback_w = np.where(in_ratio > ratio[1], np.round(heights * ratio[1]), widths).astype(np.int64)
    fallback_h = np.where(in_ratio < ratio[0], np.round(widths / ratio[0]), heights).astype(np.int64)
    found = fits.any(axis=1)
    h, w = np.where(found, h, fallback_h), np.where(found, w, fallback_w)
    top = np.where(found, top, (heights - h) // 2)
    left = np.where(found, left, (widths - w) // 2)
    return np.stack([top, left, h, w], axis=1)


@lru_cache(maxsize=8)
def sub_policies(policy: str, image_size: int) -> SubPolicies:
    return SubPolicies(policy, image_size)


class SubPolicies:
    """torchvision's AutoAugment ``policy`` as arrays: each sub-policy's two operations (indices into ``name``,
    ``magnitude`` at ``image_size`` and ``signed``: whether it takes a random sign) and their probabilities.
    Read from torchvision itself (its sub-policies and magnitude bins), so the law is its own."""

    def __init__(self, policy: str, image_size: int):
        reference = T.AutoAugment(T.AutoAugmentPolicy(policy))
        # The magnitudes of torchvision's forward (10 bins) for this view size.
        space = reference._augmentation_space(10, (image_size, image_size))
        found: dict[tuple[str, float, bool], int] = {}
        count = len(reference.policies)
        self.operation, self.probability = np.zeros((count, 2), np.int64), np.zeros((count, 2))
        for position, sub_policy in enumerate(reference.policies):
            for stage, (name, probability, magnitude_bin) in enumerate(sub_policy):
                magnitudes, signed = space[name]
                magnitude = float(magnitudes[magnitude_bin]) if magnitude_bin is not None else 0.0
                self.operation[position, stage] = found.setdefault((name, magnitude, signed), len(found))
                self.probability[position, stage] = probability
        self.name = np.array([name for name, _, _ in found])
        self.magnitude = np.array([magnitude for _, magnitude, _ in found])
        self.signed = np.array([signed for _, _, signed in found])


@dataclass
class AutoAugmentDecisions:
    """What ``AutoAugment.get_params`` draws for each view: its sub-policy and, for the sub-policy's two
    operations, whether each applies (its draw is below the operation's probability) and its sign."""

    sub_policy: np.ndarray  # (K,) index into SubPolicies
    applied: np.ndarray  # (K, 2) bool
    negative: np.ndarray  # (K, 2) bool: a signed operation's magnitude is negated


@dataclass
class ViewParameters:
    """Everything random about K = views x samples views, view-major (row ``v * N + n``)."""

    windows: np.ndarray  # (K, 4) top, left, height, width on the original image
    flip: np.ndarray  # (K,) bool
    jitter: np.ndarray  # (K,) bool
    jitter_order: np.ndarray  # (K, 4) operation indices (brightness, contrast, saturation, hue)
    jitter_factors: np.ndarray  # (K, 4) brightness, contrast, saturation factors; hue shift
    grayscale: np.ndarray  # (K,) bool
    blur: np.ndarray  # (K,) bool
    sigma: np.ndarray  # (K,) float
    autoaugment: AutoAugmentDecisions | None  # None: the recipe has no AutoAugment


# A recipe without colour jitter or blur draws them with probability 0 (and a finite sigma that is never used).
_NO_JITTER, _NO_BLUR = ColourJitter(0.0, 0.0, 0.0, 0.0, 0.0), Blur(0.0, (1.0, 1.0))


def draw_view_parameters(seeds: np.ndarray, num_views: int, heights: np.ndarray, widths: np.ndarray,
                         min_crop_scale: float, recipe: AugmentRecipe) -> ViewParameters:
    """The parameters of ``num_views`` views of each sample under ``recipe``, from its seed and original size alone."""
    count = len(seeds)
    draws = splitmix_uniforms(seeds, num_views * DRAWS_PER_VIEW).reshape(count, num_views, DRAWS_PER_VIEW)
    draws = draws.transpose(1, 0, 2).reshape(num_views * count, DRAWS_PER_VIEW)
    heights, widths = np.tile(heights, num_views), np.tile(widths, num_views)
    jitter, blur = recipe.colour_jitter or _NO_JITTER, recipe.blur or _NO_BLUR
    spread = np.array([jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue])
    factors = spread * (2 * draws[:, _FACTORS] - 1) + np.array([1.0, 1.0, 1.0, 0.0])
    decisions = None
    if recipe.autoaugment is not None:
        probability = sub_policies(recipe.autoaugment, 1).probability  # the probabilities do not depend on the size
        chosen = np.minimum((draws[:, _SUB_POLICY] * len(probability)).astype(np.int64), len(probability) - 1)
        decisions = AutoAugmentDecisions(chosen, draws[:, _OP_APPLIED] < probability[chosen], draws[:, _OP_SIGN] < 0.5)
    return ViewParameters(
        windows=crop_windows(draws, heights, widths, (min_crop_scale, 1.0)),
        flip=draws[:, _FLIP] < 0.5,
        jitter=draws[:, _JITTER] < jitter.probability,
        jitter_order=np.argsort(draws[:, _ORDER], axis=1),  # a uniform random permutation per view
        jitter_factors=factors,
        grayscale=draws[:, _GRAY] < recipe.grayscale_probability,
        blur=draws[:, _BLUR] < blur.probability,
        sigma=blur.sigma[0] + (blur.sigma[1] - blur.sigma[0]) * draws[:, _SIGMA],
        autoaugment=decisions,
    )


# --- colour operations on float images in [0, 1], one factor per image -------------------------------
def _gray(images: Tensor) -> Tensor:
    r, g, b = images.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def _shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    """torchvision's adjust_hue: to HSV, rotate the hue, back to RGB."""
    r, g, b = images.unbind(1)
    # Elementwise over the three channels: a reduction over dim 1 of a (N, 3, H, W) batch is ~10x slower on the CPU.
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    has_hue = chroma > 0
    safe_chroma = torch.where(has_hue, chroma, torch.ones_like(chroma))
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    hue = torch.where(value == r, (g - b) / safe_chroma,
                      torch.where(value == g, 2 + (b - r) / safe_chroma, 4 + (r - g) / safe_chroma))
    hue = torch.where(has_hue, hue / 6, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    sextant = hue * 6
    channels = []
    for offset in (5, 3, 1):  # R, G, B of the standard HSV-to-RGB formula
        k = torch.remainder(offset + sextant, 6)
        channels.append(value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(channels, 1)


def _jitter_operation(images: Tensor, operation: int, factor: Tensor) -> Tensor:
    if operation == _BRIGHTNESS:
        return (images * factor.view(-1, 1, 1, 1)).clamp_(0, 1)
    if operation == _CONTRAST:
        return _blend(images, _gray(images).mean(dim=(1, 2, 3), keepdim=True), factor)
    if operation == _SATURATION:
        return _blend(images, _gray(images), factor)
    return _shift_hue(images, factor)


def _gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Per-image Gaussian blur as two grouped 1-D convolutions (reflect padding, as torchvision)."""
    count, channels, height, width = images.shape
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - (kernel_size - 1) / 2
    kernels = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(channels, 0)
    pad = kernel_size // 2
    flat = F.pad(images.reshape(1, count * channels, height, width), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, kernels.view(-1, 1, 1, kernel_size), groups=count * channels)
    flat = F.conv2d(flat, kernels.view(-1, 1, kernel_size, 1), groups=count * channels)
    return flat.view(count, channels, height, width)


# --- AutoAugment operations on uint8 images, one magnitude per call (torchvision's meaning of each) ---
# Geometric operations resample with a per-view matrix (one grid_sample per stage); torchvision's own
# kernels would build their matrix and sharpness kernel on the device from host lists (a blocking copy each).
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_COLOUR_OPERATIONS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "Brightness": lambda images, m: v2.functional.adjust_brightness(images, 1.0 + m),
    "Color": lambda images, m: v2.functional.adjust_saturation(images, 1.0 + m),
    "Contrast": lambda images, m: v2.functional.adjust_contrast(images, 1.0 + m),
    "Sharpness": lambda images, m: _sharpened(images, 1.0 + m),
    "Posterize": lambda images, m: v2.functional.posterize(images, int(m)),
    "Solarize": lambda images, m: v2.functional.solarize(images, m),
    "AutoContrast": lambda images, m: _autocontrast(images),
    "Equalize": lambda images, m: v2.functional.equalize(images),
    "Invert": lambda images, m: v2.functional.invert(images),
}


def _autocontrast(images: Tensor) -> Tensor:
    """torchvision's autocontrast of uint8 images, with ``torch.where`` for its two boolean-mask writes (each
    would make the host wait for the device)."""
    pixels = images.float()
    minimum = pixels.amin(dim=(-2, -1), keepdim=True)
    maximum = pixels.amax(dim=(-2, -1), keepdim=True)
    flat = maximum == minimum
    inv_scale = torch.where(flat, 1.0, maximum.sub_(minimum).mul_(1.0 / 255))
    return pixels.sub_(torch.where(flat, 0.0, minimum)).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def _sharpened(images: Tensor, factor: float) -> Tensor:
    """torchvision's adjust_sharpness of uint8 images (PIL's smoothing kernel, 1s around a 5, over 13; the
    border kept), with the kernel made on the device rather than copied there."""
    kernel = F.pad(torch.full((3, 1, 1, 1), 5.0 / 13, device=images.device), (1, 1, 1, 1), value=1.0 / 13)
    output = images.float()
    degenerate = F.conv2d(output, kernel, groups=3).round_()
    interior = output[..., 1:-1, 1:-1]
    interior.add_(degenerate.sub_(interior), alpha=1.0 - factor)
    return output.clamp_(0, 255).to(torch.uint8)


def _sampling_matrix(name: str, magnitude: float, size: int) -> np.ndarray:
    """``(2, 3)`` matrix in ``affine_grid``'s normalised coordinates that resamples a ``size``-pixel square view as
    torchvision's AutoAugment operation does on a tensor: F.affine about the top-left corner (shears) or the
    centre (translations), F.rotate counter-clockwise about the centre."""
    degrees = math.degrees(math.atan(magnitude))
    shear = {"ShearX": [degrees, 0.0], "ShearY": [0.0, degrees]}.get(name, [0.0, 0.0])
    translate = {"TranslateX": [float(int(magnitude)), 0.0], "TranslateY": [0.0, float(int(magnitude))]}.get(name, [0.0, 0.0])
    center = [-0.5 * size, -0.5 * size] if name in ("ShearX", "ShearY") else [0.0, 0.0]
    angle = -magnitude if name == "Rotate" else 0.0
    # torchvision's inverse affine matrix (output to input pixel offsets from the centre), so the geometry is its own
    matrix = np.array(TF._get_inverse_affine_matrix(center, angle, translate, 1.0, shear)).reshape(2, 3)
    matrix[:, 2] /= 0.5 * size  # a square view: only the offsets change scale
    return matrix


def _to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A host array on ``device`` without waiting for it (pinned, non-blocking on a GPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


def autoaugmented(views: Tensor, decisions: AutoAugmentDecisions, table: SubPolicies) -> Tensor:
    """``(K, 3, S, S)`` uint8 views through their drawn sub-policies, stage by stage: the views whose operation
    is geometric in one ``grid_sample`` with a matrix each, the others grouped by operation and signed magnitude,
    one ``torchvision.transforms.v2.functional`` call per group. The groups come from the host-side decisions;
    their positions and matrices reach the device in one copy each (no device-to-host sync)."""
    size = views.shape[-1]
    steps, matrices = [], []  # steps: (operation name or None for the stage's geometric views, magnitude, positions)
    for stage in range(2):
        operation = table.operation[decisions.sub_policy, stage]
        signed_magnitude = table.magnitude[operation] * np.where(decisions.negative[:, stage] & table.signed[operation], -1, 1)
        applied = decisions.applied[:, stage]
        geometric = applied & np.isin(table.name[operation], _GEOMETRIC)
        if geometric.any():
            steps.append((None, 0.0, np.flatnonzero(geometric)))
            matrices += [_sampling_matrix(table.name[op], m, size) for op, m in zip(operation[geometric], signed_magnitude[geometric], strict=True)]
        colour = applied & ~geometric
        pairs = np.stack([operation[colour], signed_magnitude[colour]], 1)
        for op, magnitude in np.unique(pairs, axis=0):
            positions = np.flatnonzero(colour & (operation == op) & (signed_magnitude == magnitude))
            steps.append((table.name[int(op)], float(magnitude), positions))
    if not steps:
        return views
    flat = _to_device(np.concatenate([positions for _, _, positions in steps]), views.device)
    thetas = _to_device(np.array(matrices, dtype=np.float32).reshape(-1, 2, 3), views.device)
    start = theta_start = 0
    for name, magnitude, positions in steps:
        at = flat[start:start + len(positions)]
        start += len(positions)
        if name is None:
            theta = thetas[theta_start:theta_start + len(positions)]
            theta_start += len(positions)
            grid = F.affine_grid(theta, [len(positions), 3, size, size], align_corners=False)
            views[at] = F.grid_sample(views[at].float(), grid, mode="nearest", padding_mode="zeros",
                                      align_corners=False).to(torch.uint8)
        else:
            views[at] = _COLOUR_OPERATIONS[name](views[at], magnitude)
    return views


def resized_crops(batch: Tensor, boxes: Tensor, size: int) -> Tensor:
    """``(K, 3, size, size)`` floats in [0, 1]: box ``[image, x1, y1, x2, y2]`` (pixel edges) of a uint8 batch,
    resized. ``sampling_ratio=-1`` averages ceil(box / size) bilinear samples per output pixel: a bilinear
    resize when enlarging, an area-averaging (antialiased) one when shrinking, as RandomResizedCrop."""
    crops = roi_align(batch.float(), boxes, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return crops.div_(255).clamp_(0, 1)


# --- loading: turning what workers hand over (data/decode.py) into one padded uint8 batch ----------
def _fit(image: Tensor, max_side: int) -> Tensor:
    """Downscale a decoded ``(3, H, W)`` uint8 image so that its longest side is at most ``max_side``."""
    height, width = image.shape[-2:]
    if max(height, width) <= max_side:
        return image
    factor = max_side / max(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)


def pad_to_batch(images: list[Tensor]) -> Tensor:
    """One ``(N, 3, H_max, W_max)`` uint8 tensor; each image's last row and column are repeated once
    beyond its edge, so bilinear sampling at a crop's far edge reads the image, not the padding."""
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = images[0].new_zeros((len(images), 3, height, width))
    for position, image in enumerate(images):
        h, w = image.shape[1:]
        batch[position, :, :h, :w] = image
        if w < width:
            batch[position, :, :h, w] = image[:, :, -1]
        if h < height:
            batch[position, :, h, : min(w + 1, width)] = batch[position, :, h - 1, : min(w + 1, width)]
    return batch


class BatchedViews:
    """The batched views of an augmentation ``recipe``: ``__call__`` prepares one sample in a DataLoader worker, ``collate`` makes
    the batch, ``draw_views`` decodes what is still encoded and draws every view of the batch at once.

    ``encoded_source``: the dataset hands over ``EncodedImage`` bytes (ImageFolder files, webdataset
    members). Workers decode them with libjpeg, or with ``decode_on_device`` pass the JPEG bytes on, to be
    decoded in the training process in one ``decode_jpeg`` call on the GPU. Non-JPEG or damaged data is
    decoded by PIL instead and counted in ``decode_fallbacks``.
    ``augment_in_workers`` (training on the CPU): ``collate`` draws the views, so that the workers do it
    alongside the training step; otherwise ``on_device`` draws them in the training process, on the GPU.
    """

    name = "batched"

    def __init__(self, image_size: int, num_views: int, recipe: AugmentRecipe, *, encoded_source: bool = False,
                 decode_on_device: bool = False, augment_in_workers: bool = False,
                 min_crop_scale: float | None = None):
        self.image_size = image_size
        self.num_views = num_views
        self.recipe = recipe
        self.sub_policies = sub_policies(recipe.autoaugment, image_size) if recipe.autoaugment is not None else None
        self.encoded_source = encoded_source
        self.decode_on_device = decode_on_device
        self.augment_in_workers = augment_in_workers
        self.min_crop_scale = min_crop_scale if min_crop_scale is not None else default_min_crop_scale(image_size)
        self.blur_kernel = _blur_kernel(image_size)
        self.max_side = max_loaded_side(image_size)
        self.decode_fallbacks = 0  # images libjpeg (or the GPU decoder) could not read, decoded by PIL instead
        self._normalisers: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def describe(self) -> dict:
        """What result.json records about the input path."""
        decode = "device" if self.decode_on_device else ("workers" if self.encoded_source else "dataset")
        return {"augment": self.name, "decode": decode, "augment_in": "workers" if self.augment_in_workers else "device",
                "decode_fallbacks": self.decode_fallbacks}

    # --- worker side -----------------------------------------------------------------------------------
    def __call__(self, item: dict, sample_seed: int) -> dict:
        """One sample's pixels (or JPEG bytes), original size and seed."""
        image, rgb = item["image"], item.get(RGB_PIXELS)
        if rgb is not None and max(rgb.shape[:2]) <= self.max_side:
            pixels, size, fallback = torch.from_numpy(rgb).permute(2, 0, 1), rgb.shape[:2], self.encoded_source
        elif isinstance(image, EncodedImage):
            pixels, size, fallback = self._load_encoded(image)
        else:
            # A dataset asked for encoded images hands over decoded ones only where it had to decode itself.
            pixels, size, fallback = pil_to_uint8(image, self.max_side), (image.size[1], image.size[0]), self.encoded_source
        return {"image": pixels, "original_size": np.array(size, dtype=np.int64), "seed": sample_seed,
                "decode_fallback": int(fallback), **item_fields(item)}

    def _load_encoded(self, image: EncodedImage) -> tuple[Tensor, tuple[int, int], bool]:
        """JPEG bytes to pass on (size unknown yet) when decoding on the device, else decoded pixels;
        whether PIL had to decode them (not a JPEG, or libjpeg refused it)."""
        fallback = not is_complete_jpeg(image.data)
        if not fallback:
            raw = torch.frombuffer(bytearray(image.data), dtype=torch.uint8)
            if self.decode_on_device:
                return raw, (0, 0), False
            try:
                decoded = decode_jpeg(raw, mode=ImageReadMode.RGB)
            except RuntimeError:
                fallback = True
        if fallback:
            decoded = decode_on_cpu(image.data, image.source)
        return _fit(decoded, self.max_side), tuple(decoded.shape[1:]), fallback

    def collate(self, items: list[dict]) -> dict:
        """One packed batch: the pixels (or JPEG bytes) of all items in one flat uint8 tensor with host-side
        offsets and sizes, the labels as a tensor, every other field as a host array."""
        batch = {**pack_images([item["image"] for item in items]),
                 "original_size": np.stack([np.asarray(item["original_size"]) for item in items]),
                 "seed": np.array([item["seed"] for item in items], dtype=np.uint64),
                 "decode_fallbacks": sum(item["decode_fallback"] for item in items),
                 "index": np.array([item["index"] for item in items], dtype=np.int64),
                 "label": torch.tensor([item["label"] for item in items]),
                 "caption": [item["caption"] for item in items],
                 "skipped": np.array([item["skipped"] for item in items], dtype=np.int64)}
        return self.draw_views(batch, torch.device("cpu")) if self.augment_in_workers else batch

    # --- where the views are drawn ---------------------------------------------------------------------
    def on_device(self, batch: dict, device: torch.device) -> dict:
        """The training process's part: the batch with ``view1`` .. ``viewN`` on ``device``."""
        if "pixels" in batch:
            batch = self.draw_views(batch, device)
        self.decode_fallbacks += int(batch.pop("decode_fallbacks"))
        return batch

    def draw_views(self, batch: dict, device: torch.device) -> dict:
        """Replaces the batch's pixels by ``view1`` .. ``viewN`` (normalised float, channels_last, on ``device``)."""
        images, originals, fallbacks = self.decode(unpack(batch, device), device)
        batch["decode_fallbacks"] += fallbacks
        unreadable = [position for position, image in enumerate(images) if image is None]
        if unreadable:
            stand_in_for_unreadable(batch, images, originals, unreadable)
        sizes = [tuple(size) if size[0] else original
                 for size, original in zip(batch.pop("original_size").tolist(), originals, strict=True)]
        views = self.augment(pad_to_batch(images), [tuple(image.shape[1:]) for image in images], sizes,
                             batch.pop("seed"))
        batch.update({f"view{k + 1}": view for k, view in enumerate(views)})
        return batch

    def decode(self, images: list[Tensor], device: torch.device) -> tuple[list[Tensor | None], list[tuple[int, int]], int]:
        """Decoded images on ``device`` (capped to ``max_side``; None where unreadable), their original sizes
        ((0, 0) for those that arrived decoded) and how many needed PIL. Encoded ones go through one batched
        ``decode_jpeg``; when it fails, each is retried alone, the refused ones are decoded by PIL, and the
        ones PIL refuses too are unreadable."""
        encoded = [position for position, image in enumerate(images) if image.dim() == 1]
        decoded: dict[int, Tensor | None] = {position: images[position].to(device, non_blocking=True)
                                             for position in range(len(images)) if images[position].dim() == 3}
        originals, fallbacks = [(0, 0)] * len(images), 0
        if encoded:
            target = device if device.type == "cuda" else "cpu"
            try:
                pixels = decode_jpeg([images[p] for p in encoded], mode=ImageReadMode.RGB, device=target)
            except RuntimeError:
                pixels = []
                for position in encoded:
                    try:
                        pixels.append(decode_jpeg(images[position], mode=ImageReadMode.RGB, device=target))
                    except RuntimeError:
                        fallbacks += 1
                        log.warning("the batched JPEG decoder refused one image; PIL decodes it")
                        try:
                            pixels.append(decode_on_cpu(images[position].numpy().tobytes(), "in this batch"))
                        except CorruptImageError as error:
                            log.warning("%s; skipped (another image of the batch stands in for it)", error)
                            pixels.append(None)
            for position, image in zip(encoded, pixels, strict=True):
                if image is None:
                    decoded[position] = None
                    continue
                originals[position] = tuple(image.shape[1:])
                decoded[position] = _fit(image.to(device), self.max_side)
        return [decoded[position] for position in range(len(images))], originals, fallbacks

    def augment(self, batch: Tensor, loaded_sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]],
                seeds: np.ndarray) -> list[Tensor]:
        """``num_views`` augmented views of a padded uint8 batch: a list of ``(N, 3, S, S)`` tensors."""
        device, count = batch.device, len(seeds)
        original = np.asarray(original_sizes, dtype=np.int64).reshape(count, 2)
        loaded = np.asarray(loaded_sizes, dtype=np.float64).reshape(count, 2)
        params = draw_view_parameters(seeds, self.num_views, original[:, 0], original[:, 1], self.min_crop_scale,
                                      self.recipe)

        # Crop windows on the original image, scaled onto the loaded pixels: [image, x1, y1, x2, y2].
        top, left, height, width = params.windows.T.astype(np.float64)
        y_scale = np.tile(loaded[:, 0] / original[:, 0], self.num_views)
        x_scale = np.tile(loaded[:, 1] / original[:, 1], self.num_views)
        boxes = np.stack([np.tile(np.arange(count), self.num_views), left * x_scale, top * y_scale,
                          (left + width) * x_scale, (top + height) * y_scale], axis=1)
        per_view = np.concatenate([params.jitter_factors, params.sigma[:, None],
                                   np.stack([params.flip, params.jitter, params.grayscale, params.blur], 1),
                                   params.jitter_order], axis=1)
        # Which views each operation touches, known here on the host: each jitter operation at each stage of
        # the per-view order, then grayscale, then blur. Their indices ride along with the parameters
        # (exact in float32), so one copy moves everything and nothing is read back from the device.
        selections = [params.jitter & (params.jitter_order[:, stage] == operation)
                      for stage in range(4) for operation in range(4)] + [params.grayscale, params.blur]
        positions = [np.flatnonzero(selected) for selected in selections]
        starts = np.concatenate([[0], np.cumsum([len(chosen) for chosen in positions])])
        table = np.concatenate([boxes, per_view], axis=1).astype(np.float32)
        moved = _to_device(np.concatenate([table.reshape(-1), *positions]).astype(np.float32), device)
        parameters, indices = moved[:table.size].view(table.shape), moved[table.size:].long()
        boxes, factors, sigma = parameters[:, :5], parameters[:, 5:9], parameters[:, 9]
        flip = parameters[:, 10] > 0.5

        def apply(selection: int, operation) -> None:
            """views[chosen] = operation(views[chosen], chosen) for the selection's views, in place."""
            if starts[selection + 1] > starts[selection]:
                chosen = indices[starts[selection]:starts[selection + 1]]
                views[chosen] = operation(views[chosen], chosen)

        views = resized_crops(batch, boxes, self.image_size)
        views = torch.where(flip.view(-1, 1, 1, 1), views.flip(-1), views)
        for stage in range(4):
            for operation in range(4):
                apply(4 * stage + operation,
                      lambda chosen, at, op=operation: _jitter_operation(chosen, op, factors[at, op]))
        apply(16, lambda chosen, at: _gray(chosen).expand(-1, 3, -1, -1))
        apply(17, lambda chosen, at: _gaussian_blur(chosen, sigma[at], self.blur_kernel))
        if params.autoaugment is not None:  # on uint8 pixels, as the PIL path's AutoAugment sees them
            quantised = views.mul_(255).round_().to(torch.uint8)
            views = autoaugmented(quantised, params.autoaugment, self.sub_policies).float().div_(255)
        mean, std = self.normalisation(device)
        views = ((views - mean) / std).contiguous(memory_format=torch.channels_last)
        return list(views.chunk(self.num_views))

    def normalisation(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """ImageNet mean and std as ``(1, 3, 1, 1)`` tensors on ``device``, made once per device."""
        if device not in self._normalisers:
            self._normalisers[device] = tuple(torch.tensor(values).view(1, 3, 1, 1).to(device)
                                              for values in (IMAGENET_MEAN, IMAGENET_STD))
        return self._normalisers[device]


def unpack(batch: dict, device: torch.device) -> list[Tensor]:
    """The images of a packed batch (``collate``): views into its flat tensor, ``(3, H, W)`` pixels or
    1-D JPEG bytes. A batch of decoded pixels moves to ``device`` in one copy; JPEG bytes stay on the host
    for the decoder. Removes the packing fields."""
    pixels, offsets, loaded = batch.pop("pixels"), batch.pop("offsets"), batch.pop("loaded_size")
    if loaded[:, 0].all():
        pixels = pixels.to(device, non_blocking=True)
    images = []
    for position, (height, width) in enumerate(loaded.tolist()):
        segment = pixels[offsets[position]:offsets[position + 1]]
        images.append(segment.view(3, height, width) if height else segment)
    return images


def stand_in_for_unreadable(batch: dict, images: list[Tensor | None], originals: list[tuple[int, int]],
                            unreadable: list[int]) -> None:
    """Replace each unreadable image by the next readable one of the batch (its pixels, size, index, label
    and caption; the unreadable sample keeps its seed, so the views differ) and flag its position in
    ``skipped``, as a dataset does for an unreadable file. A batch with no readable image is a broken copy."""
    readable = [position for position, image in enumerate(images) if image is not None]
    if not readable:
        raise UnreadableRunError(f"no image of a batch of {len(images)} could be decoded; check the dataset's files")
    for position in unreadable:
        source = next((p for p in readable if p > position), readable[0])
        batch["skipped"][position] = batch["index"][position]
        images[position], originals[position] = images[source], originals[source]
        batch["original_size"][position] = batch["original_size"][source]
        batch["index"][position] = batch["index"][source]
        batch["label"][position] = batch["label"][source]
        batch["caption"][position] = batch["caption"][source]


# BatchedEvalViews uses BatchedViews for its decoding only: it draws no training views, so no recipe acts.
_DECODE_ONLY = AugmentRecipe("decode only", None, 0.0, None, None)


class BatchedEvalViews:
    """The evaluation transform (``pil.eval_transform``: short side to ``eval_resize``, centre crop,
    normalisation) for a whole batch on the device, for datasets that hand over JPEG bytes: DataLoader
    workers only read the files, the evaluating process decodes the batch (``decode_jpeg`` on the GPU) and
    crops every image in one ``roi_align``. Close to the PIL transform, not bit-equal (a continuous crop
    window, an area-averaging resize): it serves GPU evaluation, so CPU runs keep the PIL numbers."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.decoder = BatchedViews(image_size, 1, _DECODE_ONLY, encoded_source=True, decode_on_device=True)

    def prepare(self, image: EncodedImage | Image.Image) -> dict:
        """A worker's part for one image: its bytes (or PIL-decoded pixels) and original size; for an image
        neither decoder reads, a one-pixel placeholder (``readable`` False) whose features are left out."""
        try:
            item = self.decoder({"image": image, "index": 0}, 0)
        except CorruptImageError as error:
            log.warning("%s; left out of the evaluation", error)
            return {"image": torch.zeros((3, 1, 1), dtype=torch.uint8), "original_size": np.array([1, 1]),
                    "decode_fallback": 0, "readable": False}
        return {**{key: item[key] for key in ("image", "original_size", "decode_fallback")}, "readable": True}

    def collate(self, items: list[dict]) -> dict:
        batch = {**pack_images([item["image"] for item in items]),
                 "original_size": np.stack([np.asarray(item["original_size"]) for item in items]),
                 "decode_fallbacks": sum(item["decode_fallback"] for item in items),
                 "readable": np.array([item["readable"] for item in items])}
        return {**batch, **{key: [item[key] for item in items] for key in items[0] if key not in batch
                            and key not in ("image", "decode_fallback")}}

    def on_device(self, batch: dict, device: torch.device) -> tuple[Tensor, np.ndarray]:
        """The batch's normalised centre crops on ``device`` and which images could be read (the others'
        rows hold a stand-in: drop them)."""
        images, originals, fallbacks = self.decoder.decode(unpack(batch, device), device)
        self.decoder.decode_fallbacks += batch.pop("decode_fallbacks") + fallbacks
        readable = batch.pop("readable") & np.array([image is not None for image in images])
        if not readable.any():
            raise UnreadableRunError(f"no image of an evaluation batch of {len(images)} could be decoded")
        stand_in = images[int(np.flatnonzero(readable)[0])]
        images = [image if image is not None else stand_in for image in images]
        original = np.array([size if size[0] else tuple(known) for size, known in
                             zip(originals, batch.pop("original_size").tolist(), strict=True)], dtype=np.float64)
        loaded = np.array([image.shape[1:] for image in images], dtype=np.float64)
        original = np.where(original > 0, original, loaded)  # an image no decoder read: its stand-in's size
        side = original.min(axis=1) * self.image_size / eval_resize(self.image_size)
        top, left = (original[:, 0] - side) / 2, (original[:, 1] - side) / 2
        scale = loaded / original
        boxes = np.stack([np.arange(len(images)), left * scale[:, 1], top * scale[:, 0],
                          (left + side) * scale[:, 1], (top + side) * scale[:, 0]], axis=1)
        crops = resized_crops(pad_to_batch(images), _to_device(boxes.astype(np.float32), device), self.image_size)
        mean, std = self.decoder.normalisation(device)
        return ((crops - mean) / std).contiguous(memory_format=torch.channels_last), readable
