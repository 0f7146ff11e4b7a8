"""Tiny training steps with each optimiser's baseline path against the one the harness uses: a tiny CLIP step
(forward, backward, AdamW) with AdamW's per-tensor path against its fused one, and a tiny SimCLR-sized backbone
step with LARS's per-tensor loop against its multi-tensor update (bit-identical, tests/test_optim.py).

    python experiments/bench_optim.py                  # this machine's threads, 20 repeats
    python experiments/bench_optim.py --threads 1

The model is the tiny profile's CLIP (configs/model/resnet_tiny.yaml: image tower and text transformer, whose
49408-token embedding holds most of its parameters) on a tiny batch (configs/scale/tiny.yaml) of images at
32 px and their captions, with the tiny AdamW recipe. Both optimisers start from the same weights and take turns
within each repeat, so a slow spell of the machine hits them alike; times are medians after ``--warmup`` steps.
The LARS step is the tiny backbone's on both views of a tiny batch (2 x 64 images) with the tiny LARS recipe.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any directory
    sys.path.insert(0, str(REPO))

from xsample.losses import clip_loss  # noqa: E402
from xsample.models.backbones import build_backbone  # noqa: E402
from xsample.models.clip import CLIPModel  # noqa: E402
from xsample.train.optim import LARS, OPTIMIZER_OPTIONS, build_optimizer, param_groups  # noqa: E402

CAPTION = "a photo of a small red striped dog on grass next to a small cat"


TINY_MODEL = REPO / "configs/model/resnet_tiny.yaml"


def tiny_backbone(model: dict) -> tuple[torch.nn.Module, int]:
    return build_backbone(model["backbone"], small_image_stem=model["small_image_stem"], stem_stride=model["stem_stride"])


def tiny_clip() -> CLIPModel:
    model = yaml.safe_load(TINY_MODEL.read_text())
    backbone, feature_dim = tiny_backbone(model)
    clip = model["clip"]
    return CLIPModel(backbone, feature_dim, clip["embed_dim"], clip["text"], init_logit_scale=clip["init_logit_scale"])


def tiny_scale() -> dict:
    return yaml.safe_load((REPO / "configs/scale/tiny.yaml").read_text())["scale"]


def race(contenders: dict[str, tuple], step, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of ``step(model, optimizer)`` per contender, the contenders taking turns in each repeat."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(warmup + repeats):
        for name, (model, optimizer) in contenders.items():
            started = time.perf_counter()
            step(model, optimizer)
            if repeat >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(measured) for name, measured in times.items()}


def report(title: str, medians: dict[str, float], images: int) -> None:
    print(title)
    baseline = next(iter(medians.values()))
    for name, median in medians.items():
        print(f"  {name:<24} {median * 1000:7.1f} ms/step  {images / median:6.0f} images/s  {baseline / median:4.2f}x")


def bench_adamw(scale: dict, warmup: int, repeats: int) -> None:
    batch, recipe = int(scale["batch_size"]), scale["optim"]["adamw"]
    lr, weight_decay = float(recipe["lr"]), float(recipe["weight_decay"])
    per_tensor_model = tiny_clip()
    fused_model = copy.deepcopy(per_tensor_model)
    settings = OPTIMIZER_OPTIONS["adamw"]
    contenders = {
        "per-tensor (foreach)": (per_tensor_model, torch.optim.AdamW(
            param_groups(per_tensor_model, weight_decay), lr=lr, weight_decay=weight_decay,
            betas=settings["betas"], eps=settings["eps"], foreach=True)),
        "fused (build_optimizer)": (fused_model, build_optimizer("adamw", fused_model, lr, weight_decay)),
    }
    images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    tokens = per_tensor_model.tokenize([CAPTION] * batch)

    def step(model, optimizer) -> None:
        image_features, text_features, logit_scale = model(images, tokens)
        loss = clip_loss(image_features, text_features, logit_scale=logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    parameters = sum(parameter.numel() for parameter in per_tensor_model.parameters())
    report(f"tiny CLIP step, batch {batch}, {parameters / 1e6:.1f}M parameters, cpu ({torch.get_num_threads()} threads)",
           race(contenders, step, warmup, repeats), batch)


def bench_lars(scale: dict, warmup: int, repeats: int) -> None:
    views, recipe = 2 * int(scale["batch_size"]), scale["optim"]["lars"]
    weight_decay = float(recipe["weight_decay"])
    loop_model = tiny_backbone(yaml.safe_load(TINY_MODEL.read_text()))[0].to(memory_format=torch.channels_last)
    foreach_model = copy.deepcopy(loop_model)
    settings = OPTIMIZER_OPTIONS["lars"]
    # lr 4: the tiny LARS base lr 16 scaled linearly to batch 64 (configs/scale/tiny.yaml)
    contenders = {
        name: (model, LARS(param_groups(model, weight_decay), lr=4.0, weight_decay=weight_decay,
                           momentum=settings["momentum"], trust_coefficient=settings["trust_coefficient"],
                           foreach=foreach))
        for name, model, foreach in (("per-tensor loop", loop_model, False),
                                     ("foreach (build_optimizer)", foreach_model, True))}
    images = torch.randn(views, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def step(model, optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(images).pow(2).mean().backward()
        optimizer.step()

    report(f"tiny backbone step with LARS, {views} views, cpu ({torch.get_num_threads()} threads)",
           race(contenders, step, warmup, repeats), views)
    report("  LARS update alone", race(contenders, lambda model, optimizer: optimizer.step(), warmup, repeats), views)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    scale = tiny_scale()
    bench_adamw(scale, args.warmup, args.repeats)
    bench_lars(scale, args.warmup, args.repeats)


if __name__ == "__main__":
    main()
