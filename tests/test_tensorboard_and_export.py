"""TensorBoard and W&B curves of a run (also across a crash and resume) and exports (backbone for xsample, timm,
open_clip; the run's probe)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import xsample.train.components as components
from tests.engine_helpers import small_run_config, tensorboard_scalars, wandb_history, wandb_offline_runs
from xsample.config import RunConfig
from xsample.data import build_dataset
from xsample.export import ExportError, export_run, main
from xsample.models import load_backbone, load_probe
from xsample.rundir.checkpoint import save_checkpoint
from xsample.rundir.provenance import config_hash
from xsample.rundir.result import ResultWriter
from xsample.train.components import build_model
from xsample.train.distributed import DistInfo
from xsample.train.run import run_experiment
from xsample.train.tracking import WANDB_STATE, LogWindow, ScalarTracker, logger_problem, wandb_mode
from xsample.views.pil import eval_transform
from xsample.views.recipe import IMAGENET_MEAN, IMAGENET_STD

STEPS = 7  # one epoch of 896 samples (max_samples=1024, class-balanced) in batches of 128
BOTH_LOGGERS = "runtime.logger=[tensorboard,wandb]"


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
    config = _tiny_config(root / "cache", BOTH_LOGGERS, evaluate=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        return run_experiment(config, root / "run"), root / "run"


def _wandb_loss_steps(run_dir: Path) -> tuple[list[int], dict[int, float], set[str]]:
    """Every step with a train/loss in any offline W&B file of the run, its values, and the W&B run ids."""
    steps, values, ids = [], {}, set()
    for records in wandb_offline_runs(run_dir):
        ids.update(record.run.run_id for record in records if record.WhichOneof("record_type") == "run")
        for row in wandb_history(records):
            if "train/loss" in row:
                steps.append(row["_step"])
                values[row["_step"]] = row["train/loss"]
    return steps, values, ids


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


@pytest.mark.slow  # the tiny run of the fixture
def test_the_offline_wandb_run_holds_the_same_scalars_and_the_run_config(tiny_run):
    record, run_dir = tiny_run
    (records,) = wandb_offline_runs(run_dir)
    rows = {row["_step"]: row for row in wandb_history(records)}
    scalars = tensorboard_scalars(run_dir)
    assert sorted(rows) == list(range(1, STEPS + 1))
    for tag, points in scalars.items():
        assert [(step, rows[step][tag]) for step, _ in points] == [(step, pytest.approx(value)) for step, value in points], tag
    assert rows[STEPS]["eval/imagenet/top1"] == pytest.approx(record["metrics"]["imagenet"]["top1"])
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == json.loads((run_dir / WANDB_STATE).read_text())["id"] and run.display_name == "run"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["provenance"]["config_hash"] == record["config_hash"] and config["method"] == record["config"]["method"]


@pytest.mark.slow  # trains a tiny run (about 15 s on 2 idle cores)
def test_a_crashed_and_resumed_run_has_each_step_once(tmp_path, monkeypatch):
    """The first process dies at step 7 after checkpointing step 4 and writing events up to step 6 (the
    loop writes each window's losses at its log step); TensorBoard and W&B (offline) each show every step once."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = _tiny_config(tmp_path / "cache", "scale.checkpoint_every_steps=4", BOTH_LOGGERS)
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

    steps, values, ids = _wandb_loss_steps(tmp_path / "run")
    assert len(wandb_offline_runs(tmp_path / "run")) == 2 and len(ids) == 1, "the resumed job continues the W&B run"
    assert sorted(steps) == list(range(1, STEPS + 1)), f"W&B steps {steps}: each once"
    assert [(step, values[step]) for step in range(1, STEPS + 1)] == [
        (step, pytest.approx(value, abs=1e-5)) for step, value in record["loss_curve"]]


def test_logger_none_writes_no_events_and_an_unknown_logger_is_refused(tmp_path):
    config = _tiny_config(tmp_path / "cache", "runtime.logger=none")
    model = torch.nn.Linear(2, 1)
    with ScalarTracker(RunConfig.from_dict(config), tmp_path, DistInfo(0, 1, 0, torch.device("cpu")), {}) as tracker:
        tracker.start(None)
        tracker.after_step(3, 1.0, model, torch.optim.SGD(model.parameters(), lr=0.1), LogWindow(100.0, 0.1))
    assert list(tmp_path.iterdir()) == []
    config["runtime"]["logger"] = ["tensorboard", "mlflow"]
    with pytest.raises(ValueError, match=r"runtime.logger=\['tensorboard', 'mlflow'\] is not supported; choose one "
                                         r"of tensorboard, wandb, none, or a list such as \[tensorboard,wandb\]"):
        run_experiment(config, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "failed"


def test_wandb_without_the_extra_is_refused_with_the_install_command(monkeypatch):
    config = {"runtime": {"logger": ["tensorboard", "wandb"]}}
    assert logger_problem(config) is None
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without the extra looks like
    assert logger_problem(config) == ("runtime.logger=['tensorboard', 'wandb'] needs Weights & Biases, which is not "
                                      'installed; install it with: pip install -e ".[wandb]"')


def test_a_tiny_export_gives_the_run_model_features_and_its_probe_its_top1(tiny_run, tmp_path, capsys):
    record, run_dir = tiny_run
    assert main([str(run_dir), "--out", str(tmp_path / "export")]) == 0
    description = json.loads((tmp_path / "export" / "config.json").read_text())
    assert description["architecture"] == "resnet_tiny" and description["load_with"]["timm"] is None
    assert "timm cannot rebuild it: resnet_tiny is defined by xsample" in description["load_with"]["why_not_timm"]
    assert description["provenance"]["config_hash"] == record["config_hash"]
    assert description["provenance"]["metrics"] == record["metrics"] and description["image_size"] == 32
    assert description["incomplete"] is None

    model = build_model(RunConfig.from_dict(record["config"]))
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"])
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    backbone = load_backbone(tmp_path / "export")
    with torch.no_grad():
        assert torch.equal(backbone(images), model.eval().features(images))

    # probe(backbone(images)) on the run's own test set gives the top-1 the run reported.
    probe = load_probe(tmp_path / "export")
    test = record["config"]["eval"]["evaluations"][0]["test"]
    dataset = build_dataset(test["name"], test["split"], **test["options"])
    assert probe.class_names == description["probe"]["class_names"] == list(dataset.class_names)
    transform = eval_transform(description["image_size"])
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), 250):
            items = [dataset[index] for index in range(start, min(start + 250, len(dataset)))]
            logits = probe(backbone(torch.stack([transform(item["image"]) for item in items])))
            correct += int((logits.argmax(dim=1) == torch.tensor([item["label"] for item in items])).sum())
    assert 100.0 * correct / len(dataset) == pytest.approx(record["metrics"]["imagenet"]["top1"], abs=0.1)

    assert main([str(run_dir), "--out", str(tmp_path / "export")]) == 2
    assert "already holds an export" in capsys.readouterr().err


def _random_run(run_dir: Path, cache: Path, *overrides: str) -> tuple[dict, torch.nn.Module]:
    """A randomly initialised ResNet-50 run directory, written by the library's own writers."""
    config = small_run_config("table='1'", "model=resnet50", *overrides, cache_dir=cache)
    model = build_model(RunConfig.from_dict(config))
    ResultWriter(run_dir, RunConfig.from_dict(config), DistInfo(0, 1, 0, torch.device("cpu"))).update(status="completed")
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


def test_export_refuses_a_dead_run_unless_allowed_and_a_file_as_out(tmp_path, capsys):
    config, _ = _random_run(tmp_path / "run", tmp_path / "cache")
    finished = subprocess.Popen(["true"])  # its pid names a process that is gone
    finished.wait()
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    result.update(status="running", heartbeat={"host": socket.gethostname(), "pid": finished.pid, "step": 3,
                                               "last_update": "2020-01-01T00:00:00+00:00", "log_interval_s": 1.0})
    (tmp_path / "run" / "result.json").write_text(json.dumps(result))

    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "the run is dead: its result.json says running, but no heartbeat for" in error
    assert "pass --allow-incomplete" in error and not (tmp_path / "export").exists()

    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "export"), "--allow-incomplete"]) == 0
    description = json.loads((tmp_path / "export" / "config.json").read_text())
    assert description["incomplete"].startswith("exported with --allow-incomplete: the run is dead")
    assert description["probe"] is None and description["load_with"]["probe"] is None
    assert "note: exported with --allow-incomplete" in capsys.readouterr().err

    (tmp_path / "file").write_text("")
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"xsample.export: --out {tmp_path / 'file'} is a file; give a folder to write " \
                                      "the export into (created when missing)\n"


def test_wandb_is_offline_without_credentials_or_server_and_respects_wandb_mode(tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no login on this machine
    assert wandb_mode() == ("offline", "no W&B credentials for api.wandb.ai (WANDB_API_KEY or `wandb login`)")
    with socket.socket() as server:  # a W&B server on the loopback that answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        assert wandb_mode() == ("online", "127.0.0.1 answers")
    mode, why = wandb_mode()  # the server is gone
    assert mode == "offline" and why.startswith("127.0.0.1 cannot be reached from this node")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == ("disabled", "WANDB_MODE is set")
