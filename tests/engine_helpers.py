"""Small run configs composed from the real configs/, shrunk to run in seconds on 2 cores."""

from __future__ import annotations

import dataclasses
import functools
import json
import struct
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.plan import PlannedRun, plan_sweep
from experiments.run_config import build_run_config
from xsample.config import RunConfig
from xsample.views.recipe import AugmentRecipe

REPO = Path(__file__).resolve().parents[1]

# Fewer samples, steps and probe epochs than scale=tiny; everything else as the harness runs it.
SMALL = [
    "scale.epochs=2", "scale.batch_size=128", "scale.checkpoint_every_steps=2",
    "datasets.fashion_mnist.tiny.options.max_samples=1024", "scale.probe.epochs=30",
]


def augment_recipe(name: str) -> AugmentRecipe:
    """The augmentation recipe of configs/augment/<name>.yaml."""
    return AugmentRecipe.from_config(yaml.safe_load((REPO / "configs" / "augment" / f"{name}.yaml").read_text()))


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's TensorBoard scalars as TensorBoard shows them (purged events are gone): tag -> [(step, value)]."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wandb_offline_runs(run_dir: Path) -> list[list]:
    """The records (wandb.proto Record) of every offline W&B run file under ``run_dir/wandb``, one list per file.

    A .wandb file is W&B's transaction log: a 7-byte header, then LevelDB-log records in 32 KiB blocks (a 7-byte
    record header: checksum, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4), each record a protobuf Record."""
    from wandb.proto.wandb_internal_pb2 import Record

    block, runs = 32768, []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, position, pending, records = path.read_bytes(), 7, b"", []
        assert data[:4] == b":W&B", f"{path} is not a W&B run file"
        while position + 7 <= len(data):
            if block - position % block < 7:  # a block's tail too short for a header is padding
                position += block - position % block
                continue
            _, length, kind = struct.unpack("<IHB", data[position:position + 7])
            if kind == 0:
                break
            pending += data[position + 7:position + 7 + length]
            position += 7 + length
            if kind in (1, 4):
                records.append(Record.FromString(pending))
                pending = b""
        runs.append(records)
    return runs


def wandb_history(records: list) -> list[dict]:
    """The history rows (one per step, with ``_step``) of one offline W&B run file."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]


def small_run_config(*overrides: str, cache_dir: Path | None = None) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="reproduce", overrides=[*SMALL, *overrides])
    config = build_run_config(OmegaConf.to_container(cfg, resolve=True))
    GlobalHydra.instance().clear()
    if cache_dir is not None:
        config["paths"]["cache"] = str(cache_dir)
    return config


@functools.lru_cache
def _parsed_small_run_config(*overrides: str) -> RunConfig:
    return RunConfig.from_dict(small_run_config(*overrides))


def typed_run_config(*overrides: str, **sections) -> RunConfig:
    """small_run_config(*overrides) as the library reads it (composed once per override list), with the
    top-level ``sections`` replaced (e.g. ``seed=3``)."""
    return dataclasses.replace(_parsed_small_run_config(*overrides), **sections)


def planned(*overrides: str, multirun: bool = True) -> list[PlannedRun]:
    """The runs a command line plans (with -m by default), checked and named as a launch would save them.
    Paper datasets are not on this machine: their missing roots are the only problems allowed."""
    plan = plan_sweep(["launcher=local", *overrides], multirun=multirun)
    assert all(" root is set" in problem for problem in plan.problems), plan.problems
    return plan.runs
