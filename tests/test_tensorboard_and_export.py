"""TensorBoard curves of a run (also across a crash and resume) and backbone exports (xsample, timm, open_clip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import xsample.train.components as components
from tests.engine_helpers import small_run_config, tensorboard_scalars
from xsample.data.augment import IMAGENET_MEAN, IMAGENET_STD
from xsample.export import ExportError, export_run, main
from xsample.models import load_backbone
from xsample.train import run_experiment
from xsample.train.checkpoint import save_checkpoint
from xsample.train.components import build_model
from xsample.train.distributed import DistInfo
from xsample.train.provenance import config_hash
from xsample.train.run import ResultWriter
from xsample.train.tracking import LogWindow, ScalarTracker

STEPS = 7  # one epoch of 896 samples (max_samples=1024, class-balanced) in batches of 128


def _raw_loss_steps(run_dir: Path) -> list[int]:
    """Every train/loss event written to any event file, purged or not."""
    return [event.step for file in sorted(run_dir.glob("events.out.tfevents.*"))
            for event in EventFileLoader(str(file)).Load()
            if any(value.tag == "train/loss" for value in event.summary.value)]


def _tiny_config(cache: Path, *overrides: str, evaluate: bool = False) -> dict:
    config = small_run_config("table='2'", "row=minilm", "scale.epochs=1", "scale.log_every_steps=3", *overrides,
                              cache_dir=cache)
    if evaluate:
        config["eval"]["evaluations"] = config["eval"]["evaluations"][:1]
        config["eval"]["evaluations"][0]["train"]["options"]["max_samples"] = 1000
        config["eval"]["evaluations"][0]["test"]["options"]["max_samples"] = 500
    else:
        config["eval"]["evaluations"] = []
    return config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("tiny")
    config = _tiny_config(root / "cache", evaluate=True)
    return run_experiment(config, root / "run"), root / "run"


@pytest.mark.slow  # trains a tiny run (about 15 s on 2 idle cores)
def test_event_scalars_match_the_result_loss_curve(tiny_run):
    record, run_dir = tiny_run
    scalars = tensorboard_scalars(run_dir)
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, STEPS + 1))
    assert scalars["train/loss"] == [(step, pytest.approx(loss, abs=1e-5)) for step, loss in record["loss_curve"]]
    for tag in ("train/lr", "train/images_per_s", "train/data_wait_fraction", "train/grad_norm"):
        assert [step for step, _ in scalars[tag]] == [3, 6, 7], tag  # every log_every_steps, and the last step
    assert all(0 <= value <= 1 for _, value in scalars["train/data_wait_fraction"])
    assert all(value > 0 for _, value in scalars["train/grad_norm"] + scalars["train/images_per_s"])
    assert scalars["eval/imagenet/top1"] == [(STEPS, pytest.approx(record["metrics"]["imagenet"]["top1"]))]


@pytest.mark.slow  # trains a tiny run (about 15 s on 2 idle cores)
def test_a_crashed_and_resumed_run_has_each_step_once(tmp_path, monkeypatch):
    """The first process dies at step 7 after checkpointing step 4 and writing events up to step 6 (the
    loop writes each window's losses at its log step)."""
    config = _tiny_config(tmp_path / "cache", "scale.checkpoint_every_steps=4")
    build = components.build_training_setup

    def crashing_setup(*args, **kwargs):
        setup = build(*args, **kwargs)
        losses, calls = setup.compute_loss, []

        def compute_loss(*loss_args):
            calls.append(1)
            if len(calls) == 7:
                raise RuntimeError("simulated crash")
            return losses(*loss_args)

        setup.compute_loss = compute_loss
        return setup

    monkeypatch.setattr(components, "build_training_setup", crashing_setup)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(config, tmp_path / "run")
    monkeypatch.setattr(components, "build_training_setup", build)
    record = run_experiment(config, tmp_path / "run")

    assert record["resumed_from"] == 4
    assert _raw_loss_steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6, 5, 6, 7], "steps 5 and 6 were written twice"
    loss = tensorboard_scalars(tmp_path / "run")["train/loss"]
    assert [step for step, _ in loss] == list(range(1, STEPS + 1)), "TensorBoard shows it once"
    assert loss == [(step, pytest.approx(value, abs=1e-5)) for step, value in record["loss_curve"]]


def test_logger_none_writes_no_events_and_an_unknown_logger_is_refused(tmp_path):
    config = _tiny_config(tmp_path / "cache", "runtime.logger=none")
    model = torch.nn.Linear(2, 1)
    with ScalarTracker(config, tmp_path, DistInfo(0, 1, 0, torch.device("cpu")), None) as tracker:
        tracker.after_step(3, 1.0, model, torch.optim.SGD(model.parameters(), lr=0.1), LogWindow(100.0, 0.1))
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    config["runtime"]["logger"] = "wandb"
    with pytest.raises(ValueError, match="runtime.logger='wandb' is not supported; choose one of tensorboard, none"):
        run_experiment(config, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "failed"


def test_a_tiny_export_gives_the_run_model_features(tiny_run, tmp_path, capsys):
    record, run_dir = tiny_run
    assert main([str(run_dir), "--out", str(tmp_path / "export")]) == 0
    description = json.loads((tmp_path / "export" / "config.json").read_text())
    assert description["architecture"] == "resnet_tiny" and description["load_with"]["timm"] is None
    assert "timm cannot rebuild it: resnet_tiny is defined by xsample" in description["load_with"]["why_not_timm"]
    assert description["provenance"]["config_hash"] == record["config_hash"]
    assert description["provenance"]["metrics"] == record["metrics"] and description["image_size"] == 32

    model = build_model(record["config"])
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"])
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(load_backbone(tmp_path / "export")(images), model.eval().features(images))

    assert main([str(run_dir), "--out", str(tmp_path / "export")]) == 2
    assert "already holds an export" in capsys.readouterr().err


def _random_run(run_dir: Path, cache: Path, *overrides: str) -> tuple[dict, torch.nn.Module]:
    """A randomly initialised ResNet-50 run directory, written by the library's own writers."""
    config = small_run_config("table='1'", "model=resnet50", *overrides, cache_dir=cache)
    model = build_model(config)
    ResultWriter(run_dir, config, DistInfo(0, 1, 0, torch.device("cpu"))).update(status="completed")
    save_checkpoint(run_dir, {"config_hash": config_hash(config), "step": 0, "samples_seen": 0,
                              "model": model.state_dict()})
    return config, model.eval()


def test_a_resnet50_export_loads_with_timm(tmp_path):
    import timm

    _, model = _random_run(tmp_path / "run", tmp_path / "cache")
    export_run(tmp_path / "run", tmp_path / "export")
    loaded = timm.create_model("resnet50", pretrained=True, num_classes=0,
                               pretrained_cfg_overlay={"file": str(tmp_path / "export" / "backbone.safetensors")})
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.features(images)
        assert torch.allclose(loaded.eval()(images), expected, atol=1e-5)
        assert torch.equal(load_backbone(tmp_path / "export")(images), expected)


def test_a_clip_export_loads_both_towers_with_open_clip(tmp_path):
    import open_clip

    config, model = _random_run(tmp_path / "run", tmp_path / "cache", "method=clip", "model.clip.embed_dim=32",
                                "model.clip.text.width=64", "model.clip.text.layers=1")
    export_run(tmp_path / "run", tmp_path / "export")
    loaded, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'export'}")
    loaded.eval()
    normalize = preprocess.transforms[-1]
    assert (tuple(normalize.mean), tuple(normalize.std)) == (IMAGENET_MEAN, IMAGENET_STD)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    captions = ["a red circle", "two blue squares"]
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'export'}")
    with torch.no_grad():
        assert torch.equal(tokenizer(captions), model.tokenize(captions))
        assert torch.allclose(loaded.encode_image(images), model.encode_image(images), atol=1e-5)
        tokens = model.tokenize(captions)
        assert torch.allclose(loaded.encode_text(tokens), model.encode_text(tokens), atol=1e-5)
        assert torch.equal(loaded.logit_scale, model.logit_scale)


def test_export_refuses_a_directory_without_a_run(tmp_path):
    with pytest.raises(ExportError, match="no readable result.json"):
        export_run(tmp_path, tmp_path / "export")
