"""Does the paper-scale input and training path work on this GPU machine, and how fast is it? (`make gpu-check`:
one GPU, a few minutes, offline, on fixture data.)

    python experiments/gpu_check.py            # ResNet-50, 224 px, bf16, per-GPU batch 512 (or the largest that fits)
    python experiments/gpu_check.py --small    # the same logic on the CPU with the tiny backbone (make test runs it)

It writes ImageNet-layout fixture images (xsample.data.fixtures: varied sizes and the hard JPEG cases; beyond
the first unique images per class, files repeat as hard links), runs the training loop on them, and prints
one JSON line:

- ``hard_cases``: each hard JPEG case, and a truncated file, through the batched path as training meets it:
  ``decoded``, ``decoded by PIL`` (the batched decoder refused it) or ``skipped``;
- ``host_syncs_per_step``: on training steps between log steps of the batched path, the calls that make the
  host wait (xsample.train.host_syncs: Python-visible ones, and on a GPU the synchronisations CUDA reports),
  next to those one batched ``decode_jpeg`` makes alone (the GPU decoder synchronises itself);
- ``ms_per_batch``: loader wait (in training), decode and augmentation (one batch each, timed apart);
- ``images_per_s``: training with ``runtime.augment=batched`` and ``pil`` (after the first log window), and the
  training step alone on a batch already on the device; ``training_over_step_alone``; ``peak_gpu_memory_gib``
  of the batched run; ``data_wait_fraction`` and ``input_fraction`` of the batched run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from experiments.run_config import build_run_config  # noqa: E402
from xsample.config import RunConfig  # noqa: E402
from xsample.data.fixtures import HARD_JPEG_CASES, hard_jpeg, jpeg_bytes, write_training_images  # noqa: E402
from xsample.data.paper_datasets import ImageFileDataset  # noqa: E402
from xsample.rundir.provenance import config_hash  # noqa: E402
from xsample.train.components import build_training_setup  # noqa: E402
from xsample.train.distributed import DistInfo  # noqa: E402
from xsample.train.host_syncs import HostSyncRecorder, cuda_syncs  # noqa: E402
from xsample.train.loop import pretrain, train_step  # noqa: E402
from xsample.train.sampling import SeededViewsDataset  # noqa: E402
from xsample.train.tracking import ScalarTracker  # noqa: E402
from xsample.views.batched import BatchedViews, unpack  # noqa: E402
from xsample.views.recipe import AugmentRecipe  # noqa: E402

LOG_EVERY = 2
PAPER = {"scale": "paper", "batch": 512, "steps": 12, "unique_per_class": 64, "image_px": 256}
SMALL = {"scale": "rehearsal", "batch": 16, "steps": 4, "unique_per_class": 4, "image_px": 64}


def run_config(profile: dict, root: Path, batch: int, augment: str, workers: int, epochs: int, *extra: str) -> RunConfig:
    """The paper (or rehearsal) profile's SimCLR run on the fixture ImageNet, as reproduce.py would build it
    (``extra``: further overrides, e.g. another augmentation recipe)."""
    overrides = ["table='1'", "method=simclr", f"scale={profile['scale']}", f"paths.imagenet={root}",
                 f"scale.batch_size={batch}", f"scale.epochs={epochs}", "scale.optim.lars.warmup_epochs=0",
                 f"runtime.augment={augment}", f"runtime.num_workers={workers}", f"runtime.log_every_steps={LOG_EVERY}",
                 "runtime.checkpoint_every_steps=0", "runtime.checkpoint_every_minutes=0", "runtime.logger=none", *extra]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="reproduce", overrides=overrides)
    GlobalHydra.instance().clear()
    return RunConfig.from_dict(build_run_config(OmegaConf.to_container(cfg, resolve=True)))


def hard_case_outcomes(directory: Path, image_size: int, recipe: AugmentRecipe, device: torch.device) -> dict[str, str]:
    """What the batched path does with each hard case: a dataset of that file and a good one, as training reads it."""
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    good = directory / "good.JPEG"
    good.write_bytes(jpeg_bytes(picture))
    cases = {case: hard_jpeg(picture, case) for case in HARD_JPEG_CASES}
    cases["truncated"] = jpeg_bytes(picture)[:5000]
    on_gpu = device.type == "cuda"
    outcomes = {}
    for case, data in cases.items():
        path = directory / f"{case}.JPEG"
        path.write_bytes(data)
        dataset = ImageFileDataset([str(path), str(good)], [0, 0])
        dataset.keep_images_encoded()
        views = BatchedViews(image_size, 2, recipe, encoded_source=True, decode_on_device=on_gpu,
                             augment_in_workers=not on_gpu)
        batch = views.on_device(views.collate([SeededViewsDataset(dataset, views, seed=0)[0]]), device)
        outcomes[case] = ("skipped" if batch["skipped"][0] >= 0 else
                          "decoded by PIL" if views.decode_fallbacks else "decoded")
    return outcomes


@contextmanager
def timed(device: torch.device, into: list[float]):
    """Seconds of the block's work on ``device`` (CUDA events on a GPU), appended to ``into``."""
    if device.type != "cuda":
        started = time.perf_counter()
        yield
        into.append(time.perf_counter() - started)
        return
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    yield
    end.record()
    end.synchronize()
    into.append(start.elapsed_time(end) / 1000)


def input_breakdown(config: RunConfig, device: torch.device, batches: int) -> dict:
    """ms per batch of decode and of the augmentation, timed apart on packed batches from the workers; and
    the synchronisations one batched decode makes alone."""
    setup = training_setup(config, device)
    views = setup.views
    loader = DataLoader(SeededViewsDataset(setup.train_dataset, views, seed=0), batch_size=config.optim.batch_size,
                        num_workers=config.runtime.num_workers, collate_fn=views.collate,
                        pin_memory=device.type == "cuda", shuffle=False)
    decode_s, total_s, decode_syncs = [], [], []
    for number, batch in enumerate(loader):
        if number == batches + 1:
            break
        with cuda_syncs() as found, timed(device, decode_s):
            views.decode(unpack(dict(batch), device), device)
        with timed(device, total_s):
            views.on_device(batch, device)
        if number == 0:  # warm-up: the first batch's kernels compile and allocate
            decode_s.clear()
            total_s.clear()
        decode_syncs.append(len(found))
    decode_ms, total_ms = 1000 * float(np.mean(decode_s)), 1000 * float(np.mean(total_s))
    return {"decode": round(decode_ms, 2), "augment": round(max(total_ms - decode_ms, 0.0), 2),
            "cuda_syncs_of_one_decode": float(np.mean(decode_syncs))}


def training_setup(config: RunConfig, device: torch.device, as_on_gpu: bool = True):
    """The run's training pieces; with ``as_on_gpu`` on the CPU, the batched views arranged as on a GPU (the
    training process decodes and draws the views), so that the small check runs the GPU's code path."""
    setup = build_training_setup(config, device)
    if as_on_gpu and isinstance(setup.views, BatchedViews) and device.type == "cpu":
        setup.views = BatchedViews(setup.views.image_size, setup.views.num_views, setup.views.recipe, encoded_source=True,
                                   decode_on_device=True, augment_in_workers=False)
    return setup


def train(config: RunConfig, device: torch.device, probe=None, as_on_gpu: bool = True):
    """pretrain() on the fixture data in a scratch run directory; its outcome."""
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    setup = training_setup(config, device, as_on_gpu)
    with tempfile.TemporaryDirectory(prefix="gpu_check_run_") as run_dir:
        return pretrain(config, Path(run_dir), info, setup, config_hash(config.to_dict()),
                        ScalarTracker(config, Path(run_dir), info, {}), step_probe=probe), setup


def host_syncs_per_step(config: RunConfig, device: torch.device) -> dict:
    """Syncs on the steps between log steps of a short batched run (recording slows a step: not timed)."""
    python_calls, cuda_reported, steps = [], [], []

    @contextmanager
    def probe(step: int):
        if step % LOG_EVERY == 0 or step == 1:
            yield
            return
        with HostSyncRecorder() as recorder, cuda_syncs() as found:
            yield
        steps.append(step)
        python_calls.append(sum(recorder.calls.values()))
        cuda_reported.append(len(found))

    outcome, _ = train(config, device, probe)
    last = outcome.steps
    kept = [k for k, step in enumerate(steps) if step != last]  # the last step is a sync point
    return {"python_calls": float(np.mean([python_calls[k] for k in kept])),
            "cuda_syncs": float(np.mean([cuda_reported[k] for k in kept])), "steps_probed": len(kept)}


def step_alone_rate(config: RunConfig, device: torch.device, steps: int) -> float:
    """Images/s of the training step on one batch already on the device (model, loss, LARS, precision as trained)."""
    setup = training_setup(config, device, as_on_gpu=False)
    views = setup.views
    dataset = SeededViewsDataset(setup.train_dataset, views, seed=0)
    batch_size = config.optim.batch_size
    batch = views.on_device(views.collate([dataset[k] for k in range(batch_size)]), device)
    model = setup.model.to(device).to(memory_format=torch.channels_last)
    optimizer, scheduler = setup.make_optimizer(model, steps + 3, steps + 3)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    precision = config.runtime.precision
    for _ in range(3):
        train_step(setup, model, batch, optimizer, scheduler, scaler, device, precision)
    seconds: list[float] = []
    with timed(device, seconds):
        for _ in range(steps):
            train_step(setup, model, batch, optimizer, scheduler, scaler, device, precision)
    return batch_size * steps / seconds[0]


def check(small: bool) -> dict:
    started = time.perf_counter()
    profile = SMALL if small else PAPER
    device = torch.device("cpu" if small else "cuda")
    workers = 1 if small else min(16, len(os.sched_getaffinity(0)))
    result: dict = {"mode": "small (cpu)" if small else "gpu", "torch": torch.__version__,
                    "device": "cpu" if small else torch.cuda.get_device_name(device)}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        scratch = Path(scratch)
        batch = profile["batch"]
        write_training_images(scratch / "imagenet", profile["unique_per_class"], profile["image_px"],
                              batch * (profile["steps"] + 1))
        config = run_config(profile, scratch / "imagenet", batch, "batched", workers, epochs=1)
        image_size = config.data.image_size
        (scratch / "cases").mkdir()
        result["hard_cases"] = hard_case_outcomes(scratch / "cases", image_size, AugmentRecipe.of(config.augment),
                                                  device)
        while True:  # 512 per GPU, or the largest batch that fits
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                batched, _ = train(config, device)
                break
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                batch //= 2
                config = run_config(profile, scratch / "imagenet", batch, "batched", workers, epochs=1)
        result.update(per_gpu_batch=batch, largest_that_fits=batch < profile["batch"], image_size=image_size,
                      backbone=config.model.backbone,
                      precision="bf16" if device.type == "cuda" else "fp32")
        if device.type == "cuda":
            result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        # runtime.augment only picks the input path
        pil_config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, augment="pil"))
        pil, _ = train(pil_config, device)
        alone = step_alone_rate(config, device, steps=5 if small else 10)
        result["images_per_s"] = {"batched": round(batched.steady_images_per_s, 1),
                                  "pil": round(pil.steady_images_per_s, 1), "step_alone": round(alone, 1)}
        result["training_over_step_alone"] = round(batched.steady_images_per_s / alone, 3)
        result["data_wait_fraction"] = round(batched.data_wait_fraction, 4)
        result["input_fraction"] = round(batched.input_fraction, 4)
        breakdown = input_breakdown(config, device, batches=2 if small else 4)
        result["ms_per_batch"] = {"loader_wait": round(1000 * batched.data_wait_seconds / batched.steps, 2),
                                  "decode": breakdown["decode"], "augment": breakdown["augment"]}
        syncs = host_syncs_per_step(config, device)
        syncs["cuda_syncs_of_one_decode_alone"] = breakdown["cuda_syncs_of_one_decode"]
        result["host_syncs_per_step"] = syncs
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="the check's logic on the CPU with the tiny backbone")
    args = parser.parse_args(argv)
    if not args.small and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device is visible; run it on a GPU machine (--small runs its logic "
                         "on the CPU)")
    print(json.dumps(check(args.small)), flush=True)


if __name__ == "__main__":
    main()
