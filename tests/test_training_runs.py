"""End-to-end tiny runs through the library: result.json contract, resume, NaN, distributed."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.engine_helpers import REPO, small_run_config, tensorboard_scalars
from xsample.config import RunConfig
from xsample.data import build_dataset
from xsample.data.shapes import OBJECTS
from xsample.eval.zero_shot import TEMPLATE_SETS
from xsample.rundir.checkpoint import ConfigMismatchError
from xsample.train.components import build_model
from xsample.train.distributed import free_port
from xsample.train.evaluate import zero_shot_accuracies
from xsample.train.run import run_experiment

REQUIRED_KEYS = {"status", "experiment", "metrics", "config", "config_hash", "git_commit", "git_dirty", "versions",
                 "hardware", "data", "timing", "resumed_from", "seed"}

pytestmark = pytest.mark.slow


def _read(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def test_tiny_xclr_on_fashion_mnist_writes_a_complete_result(tmp_path):
    config = small_run_config("table='2'", "row=minilm", cache_dir=tmp_path / "cache")
    record = run_experiment(config, tmp_path / "run")
    on_disk = _read(tmp_path / "run")
    assert on_disk == record
    assert REQUIRED_KEYS <= set(on_disk)
    assert on_disk["status"] == "completed"
    assert on_disk["experiment"]["method"] == "xclr" and on_disk["config"]["data"]["name"] == "fashion_mnist"
    train_size = on_disk["data"]["train_size"]
    assert 1000 <= train_size <= 1024, "max_samples=1024, class-balanced"
    assert on_disk["data"]["samples_seen"] == 2 * (train_size // 128) * 128, "2 epochs of full batches"
    assert on_disk["metrics"]["imagenet"]["top1"] > 40.0, "10 classes: chance is 10%"
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    diagnostics = on_disk["metrics"]["graph_diagnostics"]
    assert (diagnostics["batches"], diagnostics["batch_size"], diagnostics["graph_temperature"]) == (8, 128, 0.35)
    assert 0 < diagnostics["share_other_view"] < diagnostics["share_same_class"] < 1
    assert diagnostics["share_same_class"] + diagnostics["share_rest"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.long
def test_tiny_clip_on_shapes_completes_with_zero_shot(tmp_path):
    config = small_run_config("table='3'", "method=clip", "dataset=cc3m", cache_dir=tmp_path / "cache")
    record = run_experiment(config, tmp_path / "run")
    assert record["status"] == "completed"
    metrics = record["metrics"]
    assert metrics["imagenet"]["top1"] > 100.0 / len(OBJECTS) + 10, metrics
    assert record["config"]["eval"]["zero_shot"] == {"templates": "shapes_captions"}, "the tiny profile's prompts"

    # Every template set evaluates this model; the run reported the one its config names.
    config = RunConfig.from_dict(record["config"])
    model = build_model(config)
    model.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"])
    accuracies = zero_shot_accuracies(model, config, torch.device("cpu"), TEMPLATE_SETS)
    assert accuracies["shapes_captions"] == pytest.approx(metrics["zero_shot"]["imagenet"])
    assert all(0.0 <= accuracy <= 100.0 for accuracy in accuracies.values()), accuracies
    logit_scales = [value for _, value in tensorboard_scalars(tmp_path / "run")["train/logit_scale"]]
    assert logit_scales and all(1.0 <= value <= 100.0 for value in logit_scales)


def test_nan_loss_fails_the_run_with_its_step(tmp_path):
    config = small_run_config("table='1'", "method=simclr", "scale.optim.lars.lr=1e30", cache_dir=tmp_path / "c")
    with pytest.raises(Exception, match="loss became"):
        run_experiment(config, tmp_path / "run")
    record = _read(tmp_path / "run")
    assert record["status"] == "failed" and "at step" in record["error"]


def test_a_changed_config_is_refused_before_the_old_run_is_touched(tmp_path):
    config = small_run_config("table='2'", "row=augmentation", cache_dir=tmp_path / "c")
    run_experiment(config, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    config["method"]["temperature"] = 0.5
    with pytest.raises(ConfigMismatchError, match=r"method.temperature 0.1 -> 0.5"):
        run_experiment(config, tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def _reproduce(sweeps: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "experiments/reproduce.py", "table=2", "row=augmentation", "launcher=local",
               f"paths.sweeps={sweeps}", f"paths.cache={sweeps / 'cache'}", "scale.epochs=3",
               "scale.batch_size=128", "scale.checkpoint_every_steps=1",
               "datasets.fashion_mnist.tiny.options.max_samples=1024", "scale.probe.epochs=30", *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.long
@pytest.mark.parametrize(("augment", "signum"), [("batched", signal.SIGTERM), ("pil", signal.SIGINT)])
def test_a_stopped_local_run_is_interrupted_then_resumes_and_matches_an_uninterrupted_run(tmp_path, augment, signum):
    reference = _reproduce(tmp_path / "reference", f"runtime.augment={augment}")
    assert reference.wait(timeout=600) == 0, reference.stdout.read()
    (ref_dir,) = (tmp_path / "reference" / "table2_tiny" / "runs").iterdir()

    interrupted = _reproduce(tmp_path / "interrupted", f"runtime.augment={augment}")
    result = tmp_path / "interrupted" / "table2_tiny" / "runs" / ref_dir.name / "result.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if result.exists() and (json.loads(result.read_text()).get("checkpoint_step") or 0) >= 3:
            break
        time.sleep(0.2)
    interrupted.send_signal(signum)
    output = interrupted.communicate(timeout=120)[0]
    name = signal.Signals(signum).name
    assert interrupted.returncode == 128 + signum and "Traceback" not in output, output
    assert f"xsample: interrupted: stopped by {name}; checkpoint saved at step" in output, output
    record = json.loads(result.read_text())
    assert record["status"] == "interrupted" and record["error"].startswith(f"stopped by {name}")

    resumed = _reproduce(tmp_path / "interrupted", f"runtime.augment={augment}")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    final, expected = json.loads(result.read_text()), _read(ref_dir)
    assert final["status"] == "completed" and final["resumed_from"] >= 3
    assert final["data"]["augment"] == augment
    assert final["metrics"] == expected["metrics"]
    assert final["final_loss"] == expected["final_loss"]
    steps = [step for step, _ in tensorboard_scalars(result.parent)["train/loss"]]
    assert steps == list(range(1, final["timing"]["steps"] + 1)), "TensorBoard: each step once across the restart"

    again = _reproduce(tmp_path / "interrupted", f"runtime.augment={augment}")
    output = again.communicate(timeout=300)[0]
    assert "1 completed; 0 to launch" in output, output


def test_batched_and_pil_augmentation_train_equally_well(tmp_path):
    """Both recipes draw the same laws: their probe accuracies differ by no more than seed noise."""
    top1 = {}
    for augment in ("batched", "pil"):
        config = small_run_config("table='2'", "row=augmentation", f"runtime.augment={augment}",
                                  cache_dir=tmp_path / "cache")
        record = run_experiment(config, tmp_path / augment)
        assert record["data"]["augment"] == augment
        assert 0 <= record["timing"]["data_wait_fraction"] <= 1
        top1[augment] = record["metrics"]["imagenet"]["top1"]
    assert abs(top1["batched"] - top1["pil"]) < 6.0, top1


def _distributed_worker(rank: int, world_size: int, port: int, config: dict, run_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    run_experiment(config, run_dir)


def test_two_gloo_processes_follow_the_single_process_loss_curve(tmp_path):
    config = small_run_config("table='2'", "row=minilm", "scale.epochs=1", cache_dir=tmp_path / "cache")
    config["eval"]["evaluations"] = []
    single = run_experiment(config, tmp_path / "single")
    mp.spawn(_distributed_worker, args=(2, free_port(), config, str(tmp_path / "double")), nprocs=2, join=True)
    double = _read(tmp_path / "double")
    assert double["hardware"]["world_size"] == 2
    first_single = [loss for _, loss in single["loss_curve"][:4]]
    first_double = [loss for _, loss in double["loss_curve"][:4]]
    assert first_double == pytest.approx(first_single, rel=2e-4, abs=2e-4)
    # The target's shares are measured on the global batch (rows gathered over ranks), as the loss builds it.
    assert double["metrics"]["graph_diagnostics"] == pytest.approx(single["metrics"]["graph_diagnostics"], abs=1e-4)


def _write_caption_shards(root: Path, shards: int, per_shard: int, corrupt_key: str) -> None:
    """img2dataset-style shards (jpg + txt + json, with *_stats.json) of shapes-world images and captions."""
    source = build_dataset("shapes", "train", size="3k")
    root.mkdir()
    for shard in range(shards):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for position in range(per_shard):
                item, key = source[shard * per_shard + position], f"{shard:05d}{position:04d}"
                encoded = io.BytesIO()
                item["image"].save(encoded, format="JPEG")
                members = {"jpg": b"not a jpeg" if key == corrupt_key else encoded.getvalue(),
                           "txt": item["caption"].encode(), "json": json.dumps({"key": key}).encode()}
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        (root / f"{shard:05d}_stats.json").write_text(json.dumps({"successes": per_shard}))


def test_xclr_trains_on_webdataset_shards_with_a_caption_cache(tmp_path):
    """The paper-scale CC3M path end to end on fixture shards: stream, caption cache, skipped-sample count."""
    _write_caption_shards(tmp_path / "cc3m", shards=2, per_shard=96, corrupt_key="000010005")
    config = small_run_config("table='3'", "method=xclr", "dataset=cc3m", "scale.batch_size=64",
                              cache_dir=tmp_path / "cache")
    config["data"].update(name="cc3m", root=str(tmp_path / "cc3m"), options={})
    config["eval"]["evaluations"] = []
    config["runtime"]["max_skipped_fraction"] = 0.02  # one damaged sample in 192 is above the 0.1% default
    record = run_experiment(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert record["data"]["train_size"] == 192 and record["timing"]["steps"] == 2 * (192 // 64)
    assert record["data"]["samples_skipped"] >= 1, "the corrupt JPEG is skipped and counted"
    assert record["data"]["augment"] == "batched" and record["data"]["decode"] == "workers", "JPEG bytes reach the workers"
    cache_dirs = list((tmp_path / "cache").iterdir())
    assert len(cache_dirs) == 1 and json.loads((cache_dirs[0] / "manifest.json").read_text())["count"] == 192
    diagnostics = record["metrics"]["graph_diagnostics"]
    assert diagnostics["share_same_class"] is None, "captions have no classes"
    assert diagnostics["share_other_view"] + diagnostics["share_rest"] == pytest.approx(1.0, abs=1e-4)


def test_budget_steps_trains_a_data_fraction_for_the_whole_sets_steps_with_autoaugment_views(tmp_path):
    """Fig. 3's budget=steps: 40% of the data trains the steps of an epoch over all of it, ending mid-epoch
    with a checkpoint there; the views are the AutoAugment recipe's, drawn on the batched path."""
    config = small_run_config("table=fig3", "method=simclr", "data_fraction=0.4", "augment=autoaugment",
                              "runtime.augment=batched", "scale.epochs=1", "scale.batch_size=32",
                              "datasets.fashion_mnist.tiny.options.max_samples=256", cache_dir=tmp_path / "cache")
    config["eval"]["evaluations"] = []
    assert config["optim"]["budget"] == "steps" and config["augment"]["autoaugment"] == "imagenet"
    record = run_experiment(config, tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    data = config["data"]
    full_epoch_steps = len(build_dataset(data["name"], "train", root=data["root"], **data["options"])) // 32
    fraction_epoch_steps = record["data"]["train_size"] // 32
    assert full_epoch_steps % fraction_epoch_steps, "the budget ends mid-epoch"
    assert record["timing"]["steps"] == full_epoch_steps == record["checkpoint_step"]
    assert record["data"]["augment"] == "batched"
