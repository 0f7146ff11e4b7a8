"""`python -m xsample.export RUN_DIR --out DIR`: a run's trained image backbone (and probe) for other evaluations.

DIR/backbone.safetensors holds the backbone under timm's parameter names, DIR/config.json how to rebuild
it (architecture, stem, image size, normalisation) and where it came from (config hash, git commit,
metrics). When the run kept the linear probe of its ImageNet (analog) evaluation, DIR/probe.safetensors holds
it (config.json's ``probe`` names its classes): ``xsample.models.load_probe(DIR)(load_backbone(DIR)(images))``
gives the class logits the run scored with. Only a completed run is exported, unless ``--allow-incomplete``
(config.json's ``incomplete`` then says why the run is not). ``xsample.models.load_backbone(DIR)`` loads every export; a timm architecture with timm's own
stem also loads with ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file":
"DIR/backbone.safetensors"}, num_classes=0)``. A CLIP run whose image tower is such a timm model also gets
DIR/open_clip_config.json and DIR/open_clip_model.safetensors: ``open_clip.create_model("local-dir:DIR")``
rebuilds both towers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save

from xsample.config import Model, RunConfig, RunConfigError
from xsample.io import atomic_write_bytes, atomic_write_json
from xsample.methods import method as registered_method
from xsample.models.backbones import CUSTOM_BACKBONES, EXPORT_CONFIG, EXPORT_WEIGHTS, build_backbone
from xsample.models.classifier import PROBE_WEIGHTS, probe_metadata
from xsample.rundir.checkpoint import CHECKPOINT_NAME, ConfigMismatchError, load_checkpoint
from xsample.rundir.heartbeat import staleness
from xsample.rundir.provenance import git_state
from xsample.rundir.result import RESULT_NAME, read_result
from xsample.train.finetune import BACKBONE_PREFIX
from xsample.views.recipe import IMAGENET_MEAN, IMAGENET_STD

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"  # the name open_clip's local-dir: loader looks for first


class ExportError(RuntimeError):
    """A run directory that cannot be exported, or an output folder that already holds an export."""


def _tensors(state: dict[str, torch.Tensor], prefix: str, renamed: str = "") -> dict[str, torch.Tensor]:
    """Entries of ``state`` under ``prefix``, renamed to ``renamed`` + rest, as contiguous CPU tensors
    (training keeps conv weights channels_last, which safetensors cannot store)."""
    return {renamed + key[len(prefix):]: value.detach().cpu().contiguous()
            for key, value in state.items() if key.startswith(prefix)}


def _timm_loadable(model: Model) -> str | None:
    """Why timm (and open_clip, which builds its image tower with timm) cannot rebuild this backbone, or None."""
    name = model.backbone
    if name in CUSTOM_BACKBONES:
        return f"{name} is defined by xsample (xsample/models/backbones.py), not by timm"
    if not timm.is_model(name):
        return f"{name} is not a timm model"
    if model.small_image_stem:
        return "the run replaced timm's stem with a small-image 3x3 stem (model.small_image_stem=true)"
    return None


def _open_clip_files(state: dict[str, torch.Tensor], config: RunConfig) -> tuple[dict, dict[str, torch.Tensor]]:
    """open_clip's local-dir config and weights for xsample's CLIPModel (image tower = timm trunk + linear
    projection without bias, text tower = open_clip's TextTransformer, log logit scale)."""
    model_cfg, image_size = config.model, config.data.image_size
    open_clip_config = {
        "model_cfg": {
            "embed_dim": model_cfg.clip.embed_dim,
            "custom_text": True,  # CustomTextCLIP keeps the text tower as one `text` module, as xsample does
            "vision_cfg": {"timm_model_name": model_cfg.backbone, "timm_model_pretrained": False,
                           "timm_pool": "avg", "timm_proj": "linear", "timm_proj_bias": False,
                           "image_size": image_size},
            "text_cfg": dataclasses.asdict(model_cfg.clip.text),
        },
        "preprocess_cfg": {"size": image_size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }
    weights = {**_tensors(state, BACKBONE_PREFIX, "visual.trunk."),
               **_tensors(state, "image_projection.", "visual.head.proj."),
               **_tensors(state, "text.", "text."), "logit_scale": state["logit_scale"].detach().cpu()}
    return open_clip_config, weights


def incompleteness(result: dict[str, Any]) -> str | None:
    """Why a run's result.json does not describe a finished run (a dead run included), or None."""
    status = result.get("status")
    if status == "completed":
        return None
    if status == "running":
        dead = staleness(result.get("heartbeat"))
        if dead:
            return f"the run is dead: its result.json says running, but {dead}; relaunch its sweep to resume it"
        step = (result.get("heartbeat") or {}).get("step")
        return f"the run is still running (last logged step {step})"
    if status == "failed":
        return f"the run failed ({str(result.get('error')).splitlines()[0]})"
    return f"the run is {status}"


def _probe_description(run_dir: Path, result: dict[str, Any], step: int) -> dict[str, Any] | None:
    """What config.json says about the run's probe when the run kept one for this checkpoint, else None."""
    path = run_dir / PROBE_WEIGHTS
    if not path.is_file():
        return None
    metadata = probe_metadata(path)
    about = metadata["about"]
    if about["config_hash"] != result["config_hash"] or about["step"] != step:
        return None  # the probe of another state of the run (a rerun that has not evaluated yet)
    return {"file": PROBE_WEIGHTS, "class_names": metadata["class_names"], **about,
            "feature_standardisation": "inside the probe (feature_mean, feature_std): give it backbone features as they are"}


def export_run(run_dir: str | Path, out_dir: str | Path, allow_incomplete: bool = False) -> list[Path]:
    """Write the export of ``run_dir`` into ``out_dir``; returns the files written. A run that is not completed
    is refused unless ``allow_incomplete`` (then config.json says so)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file; give a folder to write the export into (created when missing)")
    if (out_dir / EXPORT_WEIGHTS).exists() or (out_dir / EXPORT_CONFIG).exists():
        raise ExportError(f"{out_dir} already holds an export; choose another --out or delete it first")
    result = read_result(run_dir)
    if result is None or "config" not in result:
        raise ExportError(f"{run_dir} has no readable {RESULT_NAME}; pass a run directory (sweeps/<table>/runs/<run>)")
    try:
        config = RunConfig.from_dict(result["config"])
    except RunConfigError as error:
        raise ExportError(f"{run_dir}: the run config its {RESULT_NAME} records has key {error.key}, which "
                          f"{error.problem} in this version of xsample; export it with the xsample commit that "
                          f"trained it ({result.get('git_commit')})") from None
    if config.task != "pretrain":
        raise ExportError(f"{run_dir} is a {config.task} run and trains no model; pass a pretraining run")
    incomplete = incompleteness(result)
    if incomplete and not allow_incomplete:
        raise ExportError(f"{run_dir}: {incomplete}. Export a completed run, or pass --allow-incomplete to export "
                          "its last checkpoint")
    try:
        state = load_checkpoint(run_dir, result["config_hash"])
    except ConfigMismatchError as error:
        raise ExportError(str(error)) from error
    if state is None:
        raise ExportError(f"{run_dir} has no {CHECKPOINT_NAME} to export; the run has not checkpointed yet")

    model_cfg, image_size = config.model, config.data.image_size
    backbone = _tensors(state["model"], BACKBONE_PREFIX)
    stem = {"small_image_stem": model_cfg.small_image_stem, "stem_stride": model_cfg.stem_stride}
    # Rebuilding the backbone from the description and loading strictly proves the export loads.
    model, feature_dim = build_backbone(model_cfg.backbone, **stem)
    model.load_state_dict(backbone)
    not_timm = _timm_loadable(model_cfg)
    is_clip = registered_method(config.method.name).model == "clip"
    weights_path = out_dir / EXPORT_WEIGHTS
    loaders = {"xsample": f"xsample.models.load_backbone({str(out_dir)!r})",
               "timm": None if not_timm else (
                   f"timm.create_model({model_cfg.backbone!r}, pretrained=True, "
                   f"pretrained_cfg_overlay={{'file': {str(weights_path)!r}}}, num_classes=0)"),
               "open_clip": f"open_clip.create_model('local-dir:{out_dir}')" if is_clip and not not_timm else None}
    probe = _probe_description(run_dir, result, state["step"])
    loaders["probe"] = f"xsample.models.load_probe({str(out_dir)!r})" if probe is not None else None
    if not_timm:
        tools = "timm and open_clip (which builds CLIP's image tower with timm)" if is_clip else "timm"
        loaders["why_not_timm"] = f"{tools} cannot rebuild it: {not_timm}; load it with xsample.models.load_backbone"
    description = {
        "architecture": model_cfg.backbone,
        **stem,
        "num_features": feature_dim,
        "image_size": image_size,
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        # The part of timm's pretrained_cfg that data pipelines read (timm.data.resolve_data_config).
        "pretrained_cfg": {"input_size": [3, image_size, image_size], "mean": list(IMAGENET_MEAN),
                           "std": list(IMAGENET_STD), "interpolation": "bilinear",
                           "crop_pct": 224 / 256 if image_size >= 128 else 1.0, "num_classes": 0},
        "load_with": loaders,
        "provenance": {
            "run_dir": str(run_dir.resolve()), "config_hash": result["config_hash"],
            "git_commit": result.get("git_commit"), "git_dirty": result.get("git_dirty"),
            "experiment": result.get("experiment"), "method": config.method.name,
            "status": result.get("status"), "step": state["step"], "samples_seen": state["samples_seen"],
            "metrics": result.get("metrics"), "exported_with_commit": git_state()["git_commit"],
        },
        # null for a completed run; else why the run is not, and that --allow-incomplete exported it anyway
        "incomplete": None if incomplete is None else (
            f"exported with --allow-incomplete: {incomplete}; the weights are its checkpoint at step {state['step']}"),
        "probe": probe,
    }
    written = [out_dir / EXPORT_WEIGHTS, out_dir / EXPORT_CONFIG]
    atomic_write_bytes(written[0], save(backbone))
    if probe is not None:
        atomic_write_bytes(out_dir / PROBE_WEIGHTS, (run_dir / PROBE_WEIGHTS).read_bytes())
        written.append(out_dir / PROBE_WEIGHTS)
    if is_clip and not not_timm:
        open_clip_config, open_clip_weights = _open_clip_files(state["model"], config)
        atomic_write_bytes(out_dir / OPEN_CLIP_WEIGHTS, save(open_clip_weights))
        atomic_write_json(out_dir / OPEN_CLIP_CONFIG, open_clip_config)
        written += [out_dir / OPEN_CLIP_WEIGHTS, out_dir / OPEN_CLIP_CONFIG]
    # config.json last: its presence marks a complete export.
    atomic_write_json(written[1], description)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xsample.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (holds result.json and checkpoint.pt)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the export into")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="export the last checkpoint of a run that is not completed (config.json says so)")
    args = parser.parse_args(argv)
    try:
        written = export_run(args.run_dir, args.out, allow_incomplete=args.allow_incomplete)
    except (ExportError, OSError) as error:
        print(f"xsample.export: {error}", file=sys.stderr)
        return 2
    incomplete = json.loads((args.out / EXPORT_CONFIG).read_text())["incomplete"]
    if incomplete:
        print(f"xsample.export: note: {incomplete}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
