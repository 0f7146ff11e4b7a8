"""Input pipeline throughput: the PIL recipe in workers vs the batched recipe on the device, and the
training step it has to keep up with, in one process.

    python experiments/bench_input.py --device cpu --image-size 32      # the tiny profile's case
    python experiments/bench_input.py --device cuda --image-size 224 --workers 10

Writes its own ImageFolder of JPEGs to a temporary directory (500x375, ~90 KiB each, as ImageNet's
typical file; 32x32 for --image-size 32), then measures samples/s (two views each) of
  (a) the PIL path: ``training_augmentation`` of the recipe (--augment) per image in DataLoader workers;
  (b) the batched path end to end, as training runs it: on CUDA workers read the files and the
      training process decodes them (``decode_jpeg`` on the GPU) and draws both views of the batch
      there; on the CPU workers read, decode and draw the views of whole batches;
  (c) the model's training step alone (SimCLR loss, random inputs already on the device), with the
      backbone the scale uses at that image size (resnet_tiny at 32 px, ResNet-50 at 224 px).
Rates are steady-state: the first batch (worker start-up) is not timed. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from xsample.data import AugmentRecipe, build_dataset, training_augmentation  # noqa: E402
from xsample.data.batched_augment import BatchedViews  # noqa: E402
from xsample.data.paper_datasets import imagenet_wnids  # noqa: E402
from xsample.losses import SimCLRLoss  # noqa: E402
from xsample.train.components import build_model  # noqa: E402
from xsample.train.sampling import PILViews, SeededViewsDataset  # noqa: E402

# Paper-scale files: ImageNet's typical size and weight; tiny ones: the tiny datasets' side.
FILE_SIZES = {224: (375, 500), 32: (32, 32)}
CLASSES = 10
JPEG_QUALITY = 90
NOISE = 14.0  # grain on a smooth random field: ~90 KiB at 500x375, like a photograph


def write_jpeg_folder(root: Path, count: int, height: int, width: int, seed: int = 0) -> None:
    """``root/train/<wnid>/*.jpg``: ``count`` images in ImageNet's layout, in folders named after the first
    ImageNet-1k wnids (the dataset gives other folder names no class name without LOC_synset_mapping.txt)."""
    rng = np.random.default_rng(seed)
    wnids = imagenet_wnids()[:CLASSES]
    for k in range(count):
        coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
        pixels = np.clip(smooth + rng.normal(0, NOISE, smooth.shape), 0, 255).astype(np.uint8)
        folder = root / "train" / wnids[k % CLASSES]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{k:06d}.jpg", format="JPEG", quality=JPEG_QUALITY)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(views, dataset, *, batch_size: int, batches: int, workers: int, device: torch.device) -> float:
    """Steady-state samples/s of DataLoader + ``views.on_device`` over ``batches`` batches (first one untimed)."""
    order = [k % len(dataset) for k in range(batch_size * batches)]
    loader = DataLoader(SeededViewsDataset(dataset, views, seed=0), batch_size=batch_size, sampler=order,
                        num_workers=workers, collate_fn=views.collate, pin_memory=device.type == "cuda")
    started = None
    for batch in loader:
        batch = views.on_device(batch, device)
        batch["view1"].to(device, non_blocking=True)
        _synchronize(device)
        if started is None:
            started = time.perf_counter()
    return batch_size * (batches - 1) / (time.perf_counter() - started)


def step_rate(image_size: int, batch_size: int, steps: int, device: torch.device) -> float:
    """Samples/s of forward + backward + SGD step on two random views per sample, already on the device."""
    model_file = "resnet_tiny" if image_size < 128 else "resnet50"
    model_cfg = yaml.safe_load((REPO / "configs" / "model" / f"{model_file}.yaml").read_text())
    model = build_model({"model": model_cfg, "method": {"name": "simclr"}}).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    criterion = SimCLRLoss(0.1)
    images = torch.randn(2 * batch_size, 3, image_size, image_size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    precision = torch.bfloat16 if device.type == "cuda" else None

    def one_step() -> None:
        with torch.autocast(device.type, dtype=precision, enabled=precision is not None):
            z1, z2 = model(images).chunk(2)
            loss = criterion(z1, z2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        one_step()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    _synchronize(device)
    return batch_size * steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--image-size", type=int, default=32, choices=sorted(FILE_SIZES))
    parser.add_argument("--augment", default="simclr", choices=sorted(p.stem for p in (REPO / "configs" / "augment").glob("*.yaml")),
                        help="the augmentation recipe (configs/augment/)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (both paths)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8, help="batches per loader measurement (the first is untimed)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_input: --device cuda was requested but no GPU is visible; use --device cpu")
    if args.batches < 2:
        raise SystemExit("bench_input: --batches must be at least 2 (the first batch is not timed)")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    height, width = FILE_SIZES[args.image_size]
    with tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
        files = 2 * args.batch_size
        write_jpeg_folder(Path(tmp), files, height, width)
        kib = sum(path.stat().st_size for path in Path(tmp).rglob("*.jpg")) / files / 1024
        print(f"torch {torch.__version__} on {name}; {files} JPEGs {width}x{height} (mean {kib:.0f} KiB) -> "
              f"{args.image_size} px views ({args.augment} recipe); batch {args.batch_size}, {args.workers} workers", flush=True)
        pil_dataset = build_dataset("imagenet", "train", root=tmp)
        recipe = AugmentRecipe.from_config(yaml.safe_load((REPO / "configs" / "augment" / f"{args.augment}.yaml").read_text()))
        pil = loader_rate(PILViews(training_augmentation(recipe, args.image_size), 2), pil_dataset, batch_size=args.batch_size,
                          batches=args.batches, workers=args.workers, device=device)
        print(f"(a) PIL recipe in workers:        {pil:8.0f} samples/s", flush=True)
        batched_dataset = build_dataset("imagenet", "train", root=tmp)
        batched_dataset.keep_images_encoded()
        on_gpu = device.type == "cuda"
        views = BatchedViews(args.image_size, 2, recipe, encoded_source=True, decode_on_device=on_gpu,
                             augment_in_workers=not on_gpu)
        batched = loader_rate(views, batched_dataset, batch_size=args.batch_size, batches=args.batches,
                              workers=args.workers, device=device)
        print(f"(b) batched recipe on {device.type:4}:       {batched:8.0f} samples/s  ({batched / pil:.2f}x PIL)",
              flush=True)
    step = step_rate(args.image_size, args.batch_size, args.steps, device)
    print(f"(c) training step alone:          {step:8.0f} samples/s  (batched input / step = {batched / step:.2f})",
          flush=True)
    print(json.dumps({"pil_samples_per_s": round(pil, 1), "batched_samples_per_s": round(batched, 1),
                      "step_samples_per_s": round(step, 1), "device": name}))


if __name__ == "__main__":
    main()
