"""Image backbones: timm models by name with the classifier removed, plus a CPU-sized ResNet for tiny runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import timm
from safetensors.torch import load_file
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

# An exported backbone (python -m xsample.export): weights under timm's names, and how to rebuild the model.
EXPORT_WEIGHTS = "backbone.safetensors"
EXPORT_CONFIG = "config.json"


def _resnet_tiny() -> ResNet:
    # One BasicBlock per stage and 16-128 channels keep a 32 px step well under a second on 2 CPU cores.
    # timm's plain stem is fixed at 64 channels; its deep stem follows stem_width, so the stem is as
    # narrow as the first stage (and small_image_stem replaces it anyway).
    return ResNet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), stem_type="deep", stem_width=8,
                  num_classes=0)


# Backbones defined here rather than in timm's registry; each builder returns a timm ResNet without classifier.
CUSTOM_BACKBONES: dict[str, Callable[[], ResNet]] = {"resnet_tiny": _resnet_tiny}


def use_small_image_stem(model: nn.Module, stride: int = 1) -> None:
    """Swap a timm ResNet's stride-4 stem (7x7 stride-2 conv, or the deep stem, + max-pool) for one 3x3 conv
    of the given stride and no pool, as CIFAR ResNets do, so 28-32 px images keep their resolution."""
    if not isinstance(model, ResNet):
        raise ValueError(
            f"small_image_stem works on timm ResNets only, got {type(model).__name__}; "
            "set small_image_stem=false or pick a ResNet backbone"
        )
    if stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stride}")
    first_conv = model.conv1 if isinstance(model.conv1, nn.Conv2d) else model.conv1[0]
    conv = nn.Conv2d(first_conv.in_channels, model.bn1.num_features, kernel_size=3, stride=stride, padding=1,
                     bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet conv init
    model.conv1 = conv
    model.maxpool = nn.Identity()


def build_backbone(name: str, *, small_image_stem: bool = False, pretrained: bool = False,
                   stem_stride: int = 1) -> tuple[nn.Module, int]:
    """(backbone, feature_dim): ``backbone(images)`` returns globally pooled features of size ``feature_dim``.

    ``name`` is a timm model name (e.g. "resnet50") or one of CUSTOM_BACKBONES ("resnet_tiny").
    ``small_image_stem`` (timm ResNets only) uses a 3x3 conv stem of ``stem_stride`` and no max-pool.
    ``pretrained`` loads timm's weights (paper scale only; they must be in the local cache or downloadable).
    """
    if small_image_stem and pretrained:
        raise ValueError("small_image_stem replaces the pretrained stem with an untrained one; "
                         "use pretrained=false or small_image_stem=false")
    if stem_stride != 1 and not small_image_stem:
        raise ValueError(f"stem_stride={stem_stride} only applies with small_image_stem=true; set one or drop the other")
    if name in CUSTOM_BACKBONES:
        if pretrained:
            raise ValueError(f"backbone {name!r} has no pretrained weights; set pretrained=false")
        model = CUSTOM_BACKBONES[name]()
    elif timm.is_model(name):
        try:
            model = timm.create_model(name, pretrained=pretrained, num_classes=0)
        except Exception as error:
            if not pretrained:
                raise
            raise RuntimeError(
                f"could not load pretrained weights for {name!r} ({type(error).__name__}: {error}); "
                "fetch them into the Hugging Face cache on a machine with network access, or set pretrained=false"
            ) from error
    else:
        raise ValueError(
            f"unknown backbone {name!r}; use a timm model name (see timm.list_models()) "
            f"or one of: {', '.join(sorted(CUSTOM_BACKBONES))}"
        )
    if small_image_stem:
        use_small_image_stem(model, stem_stride)
    return model, int(model.num_features)


def load_backbone(export_dir: str | Path) -> nn.Module:
    """The backbone of an export directory written by ``python -m xsample.export``, in eval mode:
    ``backbone(images)`` gives the pooled features the run's probes saw. Loads timm and custom architectures
    (resnet_tiny) alike, with or without the small-image stem."""
    export_dir = Path(export_dir)
    config_file, weights_file = export_dir / EXPORT_CONFIG, export_dir / EXPORT_WEIGHTS
    if not config_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(f"{export_dir} is not a backbone export (needs {EXPORT_CONFIG} and {EXPORT_WEIGHTS}); "
                                "write one with: python -m xsample.export RUN_DIR --out DIR")
    spec = json.loads(config_file.read_text())
    model, _ = build_backbone(spec["architecture"], small_image_stem=bool(spec["small_image_stem"]),
                              stem_stride=int(spec["stem_stride"]))
    model.load_state_dict(load_file(weights_file))
    return model.eval()


def is_norm_or_bias(name: str, parameter: nn.Parameter) -> bool:
    """Parameters SimCLR and CLIP keep out of weight decay (and LARS adaptation): biases, norm scales and
    shifts, and scalars such as CLIP's logit scale. They are exactly the parameters with fewer than 2 dims."""
    return parameter.ndim < 2
