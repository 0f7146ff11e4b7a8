"""Input pipeline throughput: the PIL recipe in workers vs the batched recipe on the device, the training
step it has to keep up with, and the rate training sees with each, in one process.

    python experiments/bench_input.py --device cpu --image-size 32      # the tiny profile's case
    python experiments/bench_input.py --device cuda --image-size 224 --workers 10

Writes the fixture ImageNet training images of ``make gpu-check`` (xsample.data.fixtures: varied sizes around
256 px, or 64 px for 32 px views, with the hard JPEG cases; files repeat as hard links beyond the rendered
ones), then measures samples/s (two views each) of
  (a) the PIL path: ``training_augmentation`` of the recipe (--augment) per image in DataLoader workers;
  (b) the batched path's input alone, as training runs it: on CUDA workers read the files and the
      training process decodes them (``decode_jpeg`` on the GPU) and draws both views of the batch there;
      on the CPU workers read, decode and draw the views of whole batches;
  (c) the training step alone on a batch already on the device (the scale's model, loss, LARS and
      precision: resnet_tiny at 32 px, ResNet-50 in bf16 at 224 px);
  (d) training itself (xsample.train.loop, the input of the next batch overlapping the step), with each path:
      the rate a run would see, after its first log window.
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

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from experiments.gpu_check import PAPER, SMALL, run_config, step_alone_rate, train  # noqa: E402
from xsample.data import build_dataset  # noqa: E402
from xsample.data.fixtures import write_training_images  # noqa: E402
from xsample.train.sampling import SeededViewsDataset  # noqa: E402
from xsample.views.batched import BatchedViews  # noqa: E402
from xsample.views.pil import PILViews, training_augmentation  # noqa: E402
from xsample.views.recipe import AugmentRecipe  # noqa: E402


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--image-size", type=int, default=32, choices=(32, 224))
    parser.add_argument("--augment", default="simclr", choices=sorted(p.stem for p in (REPO / "configs" / "augment").glob("*.yaml")),
                        help="the augmentation recipe (configs/augment/)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (both paths)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=8,
                        help="batches per measurement (the first is untimed; training logs every 2 steps)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of the step alone")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_input: --device cuda was requested but no GPU is visible; use --device cpu")
    if args.batches < 4:
        raise SystemExit("bench_input: --batches must be at least 4 (the first batch and log window are not timed)")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    profile = SMALL if args.image_size == 32 else PAPER
    with tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
        root = Path(tmp) / "imagenet"
        files = args.batch_size * args.batches
        write_training_images(root, profile["unique_per_class"], profile["image_px"], files)
        kib = sum(path.stat().st_size for path in root.rglob("*.JPEG")) / files / 1024
        print(f"torch {torch.__version__} on {name}; {files} fixture images (mean {kib:.0f} KiB, short side ~"
              f"{profile['image_px']} px, hard JPEG cases included) -> {args.image_size} px views ({args.augment} "
              f"recipe); batch "
              f"{args.batch_size}, {args.workers} workers", flush=True)
        configs = {augment: run_config(profile, root, args.batch_size, augment, args.workers, 1, f"augment={args.augment}")
                   for augment in ("batched", "pil")}
        recipe = AugmentRecipe.of(configs["batched"].augment)
        pil_dataset = build_dataset("imagenet", "train", root=root)
        pil = loader_rate(PILViews(training_augmentation(recipe, args.image_size), 2), pil_dataset, batch_size=args.batch_size,
                          batches=args.batches, workers=args.workers, device=device)
        print(f"(a) PIL recipe in workers:        {pil:8.0f} samples/s", flush=True)
        batched_dataset = build_dataset("imagenet", "train", root=root)
        batched_dataset.keep_images_encoded()
        on_gpu = device.type == "cuda"
        views = BatchedViews(args.image_size, 2, recipe, encoded_source=True, decode_on_device=on_gpu,
                             augment_in_workers=not on_gpu)
        batched = loader_rate(views, batched_dataset, batch_size=args.batch_size, batches=args.batches,
                              workers=args.workers, device=device)
        print(f"(b) batched recipe on {device.type:4}:       {batched:8.0f} samples/s  ({batched / pil:.2f}x PIL)",
              flush=True)
        step = step_alone_rate(configs["batched"], device, args.steps)
        print(f"(c) training step alone:          {step:8.0f} samples/s", flush=True)
        trained = {augment: train(config, device, as_on_gpu=False)[0].steady_images_per_s
                   for augment, config in configs.items()}
        for augment, rate in trained.items():
            print(f"(d) training with {augment:7}:        {rate:8.0f} samples/s  ({rate / step:.2f} of the step alone)",
                  flush=True)
    print(json.dumps({"pil_samples_per_s": round(pil, 1), "batched_samples_per_s": round(batched, 1),
                      "step_samples_per_s": round(step, 1), "training_batched_samples_per_s": round(trained["batched"], 1),
                      "training_pil_samples_per_s": round(trained["pil"], 1), "batch_size": args.batch_size,
                      "device": name}))


if __name__ == "__main__":
    main()
