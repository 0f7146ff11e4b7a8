"""The batched SimCLR recipe against torchvision's: same random laws, same operations, deterministic views."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.io import encode_jpeg
from torchvision.transforms import functional as TF

from xsample.data import build_dataset, simclr_augmentation
from xsample.data.batched_augment import (
    BLUR_SIGMA,
    BatchedViews,
    EncodedImage,
    _gaussian_blur,
    _jitter_operation,
    draw_view_parameters,
    pad_to_batch,
    resized_crops,
)
from xsample.data.paper_datasets import ImageFileDataset
from xsample.train.sampling import SeededViewsDataset

CPU = torch.device("cpu")
DRAWS = 4000


def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance: the largest gap between the empirical CDFs."""
    values = np.concatenate([a, b])
    gap = np.searchsorted(np.sort(a), values, side="right") / len(a) - np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(gap).max())


def _ks_threshold(n: int, m: int, alpha: float = 1e-3) -> float:
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


@pytest.mark.parametrize(("height", "width", "min_scale"), [(375, 500, 0.08), (32, 32, 0.2), (28, 90, 0.08)])
def test_crop_area_and_aspect_ratio_follow_torchvision_law(height, width, min_scale):
    """(28, 90) is a wide image where many tries fail and the centre-crop fallback matters."""
    params = draw_view_parameters(np.arange(DRAWS, dtype=np.uint64) * 7919, 1, np.full(DRAWS, height),
                                  np.full(DRAWS, width), min_scale)
    top, left, h, w = params.windows.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    torch.manual_seed(0)
    reference = np.array([T.RandomResizedCrop.get_params(torch.empty(3, height, width), (min_scale, 1.0), (3 / 4, 4 / 3))
                          for _ in range(DRAWS)])
    ref_top, ref_left, ref_h, ref_w = reference.T
    threshold = _ks_threshold(DRAWS, DRAWS)
    for ours, theirs, what in [(h * w / (height * width), ref_h * ref_w / (height * width), "area fraction"),
                               (w / h, ref_w / ref_h, "aspect ratio"),
                               (top / np.maximum(height - h, 1), ref_top / np.maximum(height - ref_h, 1), "top"),
                               (left / np.maximum(width - w, 1), ref_left / np.maximum(width - ref_w, 1), "left")]:
        assert _ks_statistic(ours, theirs) < threshold, what


def test_application_rates_and_jitter_ranges_match_the_recipe():
    params = draw_view_parameters(np.arange(DRAWS, dtype=np.uint64), 2, np.full(DRAWS, 32), np.full(DRAWS, 32), 0.2)
    views = 2 * DRAWS
    for drawn, rate in [(params.flip, 0.5), (params.jitter, 0.8), (params.grayscale, 0.2), (params.blur, 0.5)]:
        assert abs(drawn.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / views)
    brightness, contrast, saturation, hue = params.jitter_factors.T
    for factor in (brightness, contrast, saturation):
        assert 0.6 <= factor.min() < 0.61 and 1.39 < factor.max() <= 1.4
        assert abs(factor.mean() - 1.0) < 0.01
    assert -0.1 <= hue.min() < -0.099 and 0.099 < hue.max() <= 0.1
    assert BLUR_SIGMA[0] <= params.sigma.min() < 0.12 and 1.98 < params.sigma.max() <= BLUR_SIGMA[1]
    orders, counts = np.unique(params.jitter_order, axis=0, return_counts=True)
    assert len(orders) == 24 and counts.min() > views / 24 * 0.8, "every order of the four operations, evenly"


def test_colour_operations_equal_torchvision_tensor_functions():
    images = torch.rand(6, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    factors = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.9])
    shifts = torch.tensor([-0.1, -0.05, 0.0, 0.03, 0.1, 0.07])
    references = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation}
    for operation, reference in references.items():
        ours = _jitter_operation(images.clone(), operation, factors)
        theirs = torch.stack([reference(image, float(f)) for image, f in zip(images, factors, strict=True)])
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    ours = _jitter_operation(images.clone(), 3, shifts)
    theirs = torch.stack([TF.adjust_hue(image, float(s)) for image, s in zip(images, shifts, strict=True)])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_blur_equals_torchvision_gaussian_blur_with_each_sigma():
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    sigmas = torch.tensor([0.1, 1.0, 2.0])
    ours = _gaussian_blur(images, sigmas, 23)
    theirs = torch.stack([TF.gaussian_blur(image, [23, 23], [float(s), float(s)]) for image, s in zip(images, sigmas, strict=True)])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_a_crop_is_a_bilinear_resize_of_its_window_even_inside_a_padded_batch():
    image = torch.randint(0, 256, (3, 20, 26), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    larger = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    expected = TF.resize(image.float() / 255, [32, 32], antialias=False)
    alone = resized_crops(image[None], torch.tensor([[0.0, 0, 0, 26, 20]]), 32)[0]
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=0)
    padded = resized_crops(pad_to_batch([larger, image]), torch.tensor([[1.0, 0, 0, 26, 20]]), 32)[0]
    torch.testing.assert_close(padded, expected, atol=1e-5, rtol=0)


def _views(items: list[dict], batched: BatchedViews, seed_base: int = 11) -> dict:
    batch = batched.collate([batched(item, seed_base + int(item["index"])) for item in items])
    return batched.on_device(batch, CPU)


def test_views_depend_on_seed_and_index_only_not_on_batch_composition():
    shapes = build_dataset("shapes", "train", size="3k")
    batched = BatchedViews(32, 2)
    alone = _views([shapes[5]], batched)
    among = _views([shapes[9], shapes[5], shapes[2]], batched)
    torch.testing.assert_close(alone["view1"][0], among["view1"][1], atol=0, rtol=0)
    torch.testing.assert_close(alone["view2"][0], among["view2"][1], atol=0, rtol=0)
    again = _views([shapes[5]], batched)
    assert torch.equal(again["view1"], alone["view1"])
    other_seed = _views([shapes[5]], batched, seed_base=12)
    assert not torch.equal(other_seed["view1"], alone["view1"])
    assert not torch.equal(alone["view1"], alone["view2"])
    assert alone["view1"].is_contiguous(memory_format=torch.channels_last)


def test_same_sample_gives_the_same_views_with_any_worker_count_and_wherever_the_views_are_drawn():
    shapes = torch.utils.data.Subset(build_dataset("shapes", "train", size="3k"), range(12))
    runs = []
    for workers, batch_size, in_workers in [(0, 4, False), (2, 3, True)]:
        batched = BatchedViews(32, 2, augment_in_workers=in_workers)
        dataset = SeededViewsDataset(shapes, batched, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                             collate_fn=batched.collate)
        batches = [batched.on_device(batch, CPU) for batch in loader]
        runs.append(torch.cat([batch["view1"] for batch in batches]))
    assert torch.equal(runs[0], runs[1])


def test_normalised_views_have_the_statistics_of_the_pil_recipe():
    image = build_dataset("shapes", "train", size="3k")[3]["image"]
    count = 1000
    batched = BatchedViews(32, 2)
    ours = batched.augment(pil_batch := pad_to_batch([TF.pil_to_tensor(image)] * count), [(32, 32)] * count,
                           [(32, 32)] * count, np.arange(count, dtype=np.uint64))
    ours = torch.cat(ours)
    assert pil_batch.dtype == torch.uint8
    augmentation = simclr_augmentation(32)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker: torchvision's blur of a tiny tensor is slow multi-threaded
    try:
        theirs = torch.stack([augmentation(image) for _ in range(2 * count)])
    finally:
        torch.set_num_threads(threads)
    for statistic in (lambda x: x.mean(dim=(0, 2, 3)), lambda x: x.std(dim=(0, 2, 3)),
                      lambda x: x.std(dim=(2, 3)).mean(0)):
        torch.testing.assert_close(statistic(ours), statistic(theirs), atol=0.05, rtol=0.05)


def _jpeg(seed: int, height: int, width: int) -> bytes:
    pixels = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return encode_jpeg(pixels, quality=90).numpy().tobytes()


def test_bytes_decoded_in_the_training_process_give_the_views_decoded_in_workers():
    """The GPU path's logic on the CPU: JPEG bytes pass the workers undecoded, one batched decode_jpeg."""
    items = [{"image": EncodedImage(_jpeg(k, 30 + 7 * k, 40), f"image{k}"), "index": k} for k in range(4)]
    in_workers = _views(items, BatchedViews(32, 2, encoded_source=True))
    on_device = BatchedViews(32, 2, encoded_source=True, decode_on_device=True)
    passed = [on_device(item, 11 + k) for k, item in enumerate(items)]
    assert all(item["image"].dim() == 1 for item in passed), "workers hand over bytes only"
    decoded = on_device.on_device(on_device.collate(passed), CPU)
    assert torch.equal(decoded["view1"], in_workers["view1"]) and torch.equal(decoded["view2"], in_workers["view2"])
    assert on_device.describe() == {"augment": "batched", "decode": "device", "augment_in": "device",
                                    "decode_fallbacks": 0}


def test_large_images_are_capped_without_changing_the_crop_law():
    batched = BatchedViews(32, 1)
    big = EncodedImage(_jpeg(0, 300, 120), "big")
    item = batched({"image": big, "index": 0}, 5)
    assert max(item["image"].shape[1:]) == batched.max_side and item["original_size"].tolist() == [300, 120]
    windows = draw_view_parameters(np.array([5], dtype=np.uint64), 1, np.array([300]), np.array([120]), 0.2).windows
    assert windows[0, 2] <= 300 and windows[0, 3] <= 120, "drawn on the original size"
    assert batched.on_device(batched.collate([item]), CPU)["view1"].shape == (1, 3, 32, 32)


def test_non_jpeg_and_damaged_files_fall_back_to_pil_and_are_counted(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(png, format="PNG")
    files = {"a.png": png.getvalue(), "b.jpg": _jpeg(2, 30, 30), "c.jpg": b"not an image"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    dataset = ImageFileDataset([str(tmp_path / name) for name in files], [0, 1, 2])
    dataset.keep_images_encoded()
    for decode_on_device in (False, True):
        batched = BatchedViews(32, 2, encoded_source=True, decode_on_device=decode_on_device)
        views = SeededViewsDataset(torch.utils.data.Subset(dataset, [0, 1]), batched, seed=0)
        batch = batched.on_device(batched.collate([views[0], views[1]]), CPU)
        assert batch["view1"].shape == (2, 3, 32, 32)
        assert batched.describe()["decode_fallbacks"] == 1, "the PNG"
        with pytest.raises(ValueError, match=r"corrupt image .*c\.jpg.*delete or replace it"):
            batched(dataset[2], 0)


def test_the_input_benchmark_runs_and_ends_with_its_json_line():
    """A few batches of experiments/bench_input.py on the CPU: the script writes its fixture images, measures
    both input paths, the step, and training with each path, and prints one JSON object last."""
    out = subprocess.run([sys.executable, "experiments/bench_input.py", "--device", "cpu", "--image-size", "32",
                          "--workers", "0", "--batch-size", "16", "--batches", "4", "--steps", "2"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rates = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(rates[key] > 0 for key in ("pil_samples_per_s", "batched_samples_per_s", "step_samples_per_s",
                                          "training_batched_samples_per_s", "training_pil_samples_per_s")), rates
