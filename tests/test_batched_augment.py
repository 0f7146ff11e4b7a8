"""The batched augmentation recipes against torchvision's: same random laws, same operations, deterministic views."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision import transforms as T
from torchvision.io import encode_jpeg
from torchvision.transforms import functional as TF
from torchvision.transforms import v2

from experiments import bench_input
from xsample.data import build_dataset
from xsample.data.decode import EncodedImage
from xsample.data.paper_datasets import ImageFileDataset
from xsample.train.sampling import SeededViewsDataset
from xsample.views.batched import (
    AutoAugmentDecisions,
    BatchedViews,
    _autocontrast,
    _gaussian_blur,
    _jitter_operation,
    autoaugmented,
    draw_view_parameters,
    pad_to_batch,
    resized_crops,
    sub_policies,
)
from xsample.views.pil import training_augmentation
from xsample.views.recipe import AugmentRecipe

CPU = torch.device("cpu")
DRAWS = 4000
REPO = Path(__file__).resolve().parents[1]
RECIPES = {path.stem: AugmentRecipe.from_config(yaml.safe_load(path.read_text()))
           for path in sorted((REPO / "configs" / "augment").glob("*.yaml"))}
SUPCON = RECIPES["supcon"]


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
                                  np.full(DRAWS, width), min_scale, SUPCON)
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


@pytest.mark.parametrize("name", ["simclr", "supcon"])
def test_application_rates_and_jitter_ranges_match_the_recipe(name):
    recipe = RECIPES[name]
    jitter, (sigma_low, sigma_high) = recipe.colour_jitter, recipe.blur.sigma
    params = draw_view_parameters(np.arange(DRAWS, dtype=np.uint64), 2, np.full(DRAWS, 32), np.full(DRAWS, 32), 0.2,
                                  recipe)
    views = 2 * DRAWS
    for drawn, rate in [(params.flip, 0.5), (params.jitter, jitter.probability),
                        (params.grayscale, recipe.grayscale_probability), (params.blur, recipe.blur.probability)]:
        assert abs(drawn.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / views)
    brightness, contrast, saturation, hue = params.jitter_factors.T
    for factor, spread in ((brightness, jitter.brightness), (contrast, jitter.contrast), (saturation, jitter.saturation)):
        assert 1 - spread <= factor.min() < 1 - spread + 0.01 and 1 + spread - 0.01 < factor.max() <= 1 + spread
        assert abs(factor.mean() - 1.0) < 0.02
    assert -jitter.hue <= hue.min() < -jitter.hue + 0.002 and jitter.hue - 0.002 < hue.max() <= jitter.hue
    assert sigma_low <= params.sigma.min() < sigma_low + 0.02 and sigma_high - 0.02 < params.sigma.max() <= sigma_high
    assert params.autoaugment is None
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


def _torchvision_autoaugment(image: torch.Tensor, sub_policy: int, applied, negative) -> torch.Tensor:
    """torchvision's AutoAugment on one uint8 image, its get_params replaced by the given decisions."""
    reference = T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)
    # An operation applies when its uniform draw is <= its probability; a signed one is negated when its sign is 0.
    probs = torch.tensor([0.0 if chosen else 1.0 + 1e-6 for chosen in applied])
    signs = torch.tensor([0 if chosen else 1 for chosen in negative])
    reference.get_params = lambda count: (sub_policy, probs, signs)
    return reference(image)


def test_autoaugment_operations_equal_torchvision_given_the_same_decisions():
    """Every sub-policy of the ImageNet policy with every application and sign pattern: the batched groups
    give torchvision's pixels: uint8, within two levels on under 1% of them (the v2 kernels round where the
    v1 ones that torchvision's AutoAugment calls truncate: Color, AutoContrast, one level each)."""
    table = sub_policies("imagenet", 32)
    count = len(table.probability)
    patterns = [(a, b, c, d) for a in (False, True) for b in (False, True) for c in (False, True) for d in (False, True)]
    sub_policy = np.repeat(np.arange(count), len(patterns))
    flags = np.array(patterns * count)
    applied = flags[:, :2] & (table.probability[sub_policy] > 0)  # a probability-0 operation is never drawn
    decisions = AutoAugmentDecisions(sub_policy, applied, flags[:, 2:])
    generator = torch.Generator().manual_seed(4)
    smooth = TF.resize(torch.randint(0, 256, (len(sub_policy), 3, 6, 6), dtype=torch.uint8, generator=generator),
                       [32, 32], antialias=True)
    ours = autoaugmented(smooth.clone(), decisions, table)
    theirs = torch.stack([_torchvision_autoaugment(image, int(p), a, n)
                          for image, p, a, n in zip(smooth, sub_policy, applied, decisions.negative, strict=True)])
    difference = (ours.int() - theirs.int()).abs()
    assert difference.max() <= 2 and (difference > 0).float().mean() < 0.01, difference.max()
    assert not torch.equal(ours, smooth), "the operations changed the pixels"


def test_autocontrast_without_mask_writes_equals_torchvision():
    images = torch.randint(40, 200, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[1, 2] = 77  # one flat channel: left as it is
    assert torch.equal(_autocontrast(images), v2.functional.autocontrast(images))


def test_autoaugment_decisions_follow_torchvision_law():
    """Sub-policy, application and sign frequencies of the batched draws against torchvision's get_params."""
    table = sub_policies("imagenet", 32)
    count = len(table.probability)
    params = draw_view_parameters(np.arange(DRAWS, dtype=np.uint64), 2, np.full(DRAWS, 32), np.full(DRAWS, 32), 0.2,
                                  RECIPES["autoaugment"])
    decisions, views = params.autoaugment, 2 * DRAWS
    assert not (params.jitter.any() or params.grayscale.any() or params.blur.any()), "AutoAugment replaces them"
    torch.manual_seed(0)
    theirs = [T.AutoAugment.get_params(count) for _ in range(views)]
    their_policy = np.array([policy for policy, _, _ in theirs])
    their_applied = np.array([(probs <= torch.tensor(table.probability[policy])).numpy() for policy, probs, _ in theirs])
    their_negative = np.array([(signs == 0).numpy() for _, _, signs in theirs])
    # Each (sub-policy, stage) is applied at rate 1/count x its probability; two samples of `views` draws each.
    for ours, reference in [(np.bincount(decisions.sub_policy, minlength=count), np.bincount(their_policy, minlength=count)),
                            *[(np.bincount(decisions.sub_policy[decisions.applied[:, k]], minlength=count),
                               np.bincount(their_policy[their_applied[:, k]], minlength=count)) for k in (0, 1)]]:
        rate = np.maximum((ours + reference) / (2 * views), 1 / views)
        assert (np.abs(ours - reference) / views < 5 * np.sqrt(2 * rate * (1 - rate) / views)).all()
    for stage in (0, 1):
        assert abs(decisions.negative[:, stage].mean() - their_negative[:, stage].mean()) < 5 * math.sqrt(0.5 / views)
    assert not decisions.applied[table.probability[decisions.sub_policy] == 0].any()
    assert decisions.applied[table.probability[decisions.sub_policy] == 1].all()


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
    batched = BatchedViews(32, 2, SUPCON)
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
        batched = BatchedViews(32, 2, SUPCON, augment_in_workers=in_workers)
        dataset = SeededViewsDataset(shapes, batched, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                             collate_fn=batched.collate)
        batches = [batched.on_device(batch, CPU) for batch in loader]
        runs.append(torch.cat([batch["view1"] for batch in batches]))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_normalised_views_have_the_statistics_of_the_pil_recipe(name):
    image = build_dataset("shapes", "train", size="3k")[3]["image"]
    count = 1000
    batched = BatchedViews(32, 2, RECIPES[name])
    ours = batched.augment(pil_batch := pad_to_batch([TF.pil_to_tensor(image)] * count), [(32, 32)] * count,
                           [(32, 32)] * count, np.arange(count, dtype=np.uint64))
    ours = torch.cat(ours)
    assert pil_batch.dtype == torch.uint8
    augmentation = training_augmentation(RECIPES[name], 32)
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
    in_workers = _views(items, BatchedViews(32, 2, SUPCON, encoded_source=True))
    on_device = BatchedViews(32, 2, SUPCON, encoded_source=True, decode_on_device=True)
    passed = [on_device(item, 11 + k) for k, item in enumerate(items)]
    assert all(item["image"].dim() == 1 for item in passed), "workers hand over bytes only"
    decoded = on_device.on_device(on_device.collate(passed), CPU)
    assert torch.equal(decoded["view1"], in_workers["view1"]) and torch.equal(decoded["view2"], in_workers["view2"])
    assert on_device.describe() == {"augment": "batched", "decode": "device", "augment_in": "device",
                                    "decode_fallbacks": 0}


def test_large_images_are_capped_without_changing_the_crop_law():
    batched = BatchedViews(32, 1, SUPCON)
    big = EncodedImage(_jpeg(0, 300, 120), "big")
    item = batched({"image": big, "index": 0}, 5)
    assert max(item["image"].shape[1:]) == batched.max_side and item["original_size"].tolist() == [300, 120]
    windows = draw_view_parameters(np.array([5], dtype=np.uint64), 1, np.array([300]), np.array([120]), 0.2, SUPCON).windows
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
        batched = BatchedViews(32, 2, SUPCON, encoded_source=True, decode_on_device=decode_on_device)
        views = SeededViewsDataset(torch.utils.data.Subset(dataset, [0, 1]), batched, seed=0)
        batch = batched.on_device(batched.collate([views[0], views[1]]), CPU)
        assert batch["view1"].shape == (2, 3, 32, 32)
        assert batched.describe()["decode_fallbacks"] == 1, "the PNG"
        with pytest.raises(ValueError, match=r"corrupt image .*c\.jpg.*delete or replace it"):
            batched(dataset[2], 0)


@pytest.mark.slow  # two short trainings (about 20 s on 2 busy cores)
def test_the_input_benchmark_runs_and_ends_with_its_json_line(capsys):
    """A few batches of experiments/bench_input.py on the CPU (in this process: the imports are shared): the
    script writes its fixture images, measures both input paths, the step, and training with each path, and
    prints one JSON object last."""
    bench_input.main(["--device", "cpu", "--image-size", "32", "--workers", "0", "--batch-size", "8", "--batches", "4",
                      "--steps", "2"])
    rates = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(rates[key] > 0 for key in ("pil_samples_per_s", "batched_samples_per_s", "step_samples_per_s",
                                          "training_batched_samples_per_s", "training_pil_samples_per_s")), rates


@pytest.mark.parametrize("name,options", [("shapes", {"size": "3k"}), ("fashion_mnist", {"max_samples": 200})])
def test_in_memory_pixels_give_the_views_of_the_pil_image(name, options):
    """The batched views take an in-memory dataset's ``rgb_pixels`` instead of copying them out of ``image``:
    the same pixels (Fashion-MNIST's: what PIL's L -> RGB conversion gives), so the same views."""
    dataset = build_dataset(name, "train", **options)
    views = BatchedViews(32, 2, SUPCON)
    items = [dataset[position] for position in range(8)]
    assert all(np.array_equal(item["rgb_pixels"], np.asarray(item["image"].convert("RGB"))) for item in items)
    if name == "fashion_mnist":
        gray = dataset.images[int(dataset.positions[0])]
        assert np.array_equal(items[0]["rgb_pixels"], np.asarray(Image.fromarray(gray, mode="L").convert("RGB")))
    through_pil = [{key: value for key, value in item.items() if key != "rgb_pixels"} for item in items]
    drawn = [views.draw_views(views.collate([views(item, seed) for seed, item in enumerate(batch)]), CPU)
             for batch in (items, through_pil)]
    for key in ("view1", "view2"):
        assert torch.equal(drawn[0][key], drawn[1][key])
