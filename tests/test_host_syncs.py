"""A training step between log steps makes no host sync: the batched path, run on the CPU under a
TorchFunctionMode that records every call which would make the host wait for a GPU."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from tests.engine_helpers import small_run_config
from xsample.config import RunConfig
from xsample.data.fixtures import write_training_images
from xsample.rundir.provenance import config_hash
from xsample.train.components import build_training_setup
from xsample.train.distributed import DistInfo
from xsample.train.host_syncs import HostSyncRecorder
from xsample.train.loop import pretrain
from xsample.train.tracking import ScalarTracker
from xsample.views.batched import BatchedViews

CPU = torch.device("cpu")
PROBED_STEP = 2  # neither a log step, nor a checkpoint step, nor the last


def _calls_in_one_step(config: dict, run_dir) -> dict[str, int]:
    config["runtime"].update(log_every_steps=100, checkpoint_every_steps=0, checkpoint_every_minutes=0,
                             logger="none")
    typed = RunConfig.from_dict(config)
    setup = build_training_setup(typed, CPU)
    assert isinstance(setup.views, BatchedViews)
    # The GPU's arrangement on the CPU: the training process decodes what arrives encoded and draws the views.
    setup.views = BatchedViews(int(config["data"]["image_size"]), setup.views.num_views, setup.views.recipe,
                               encoded_source=setup.views.encoded_source,
                               decode_on_device=setup.views.encoded_source, augment_in_workers=False)
    calls: dict[str, int] = {}

    @contextmanager
    def probe(step: int):
        if step != PROBED_STEP:
            yield
            return
        with HostSyncRecorder() as recorder:
            yield
        calls.update(recorder.calls)
        calls["seen"] = recorder.seen

    info = DistInfo(rank=0, world_size=1, local_rank=0, device=CPU)
    run_dir.mkdir()
    outcome = pretrain(typed, run_dir, info, setup, config_hash(config), ScalarTracker(typed, run_dir, info, {}),
                       step_probe=probe)
    assert outcome.steps > PROBED_STEP and calls.pop("seen") > 500, "the step ran under the recorder"
    return calls


def test_the_recorder_sees_what_would_sync_a_gpu():
    values = torch.arange(4.0)
    with HostSyncRecorder() as recorder:
        values.sum().item()
        values[values > 1].tolist()
        bool(values.max() > 2)
        values.nonzero()
    assert recorder.calls == {"item": 1, "tolist": 1, "__getitem__[bool mask]": 1, "__bool__": 1, "nonzero": 1}


@pytest.mark.parametrize("recipe", ["supcon", "autoaugment"])
def test_a_batched_x_clr_step_makes_no_host_sync(tmp_path, recipe):
    config = small_run_config("table='2'", "row=random_class", f"augment={recipe}", "scale.epochs=1", "scale.batch_size=64",
                              "datasets.fashion_mnist.tiny.options.max_samples=256", cache_dir=tmp_path / "cache")
    assert config["augment"]["name"] == recipe
    assert _calls_in_one_step(config, tmp_path / "run") == {}


def test_a_step_decoding_jpegs_in_the_training_process_makes_no_host_sync(tmp_path):
    write_training_images(tmp_path / "images", 4, 48, 64)  # varied sizes and the hard JPEG cases
    config = small_run_config("table='1'", "method=simclr", "scale.epochs=1", "scale.batch_size=16",
                              cache_dir=tmp_path / "cache")
    config["data"].update(name="imagenet", root=str(tmp_path / "images"), options={})
    calls = _calls_in_one_step(config, tmp_path / "run")
    assert calls == {}
