"""Small run configs composed from the real configs/, shrunk to run in seconds on 2 cores."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.plan import PlannedRun, plan_sweep
from experiments.run_config import build_run_config

REPO = Path(__file__).resolve().parents[1]

# Fewer samples, steps and probe epochs than scale=tiny; everything else as the harness runs it.
SMALL = [
    "scale.epochs=2", "scale.batch_size=128", "scale.checkpoint_every_steps=2",
    "datasets.fashion_mnist.tiny.options.max_samples=1024", "scale.probe.epochs=30",
]


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's TensorBoard scalars as TensorBoard shows them (purged events are gone): tag -> [(step, value)]."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def small_run_config(*overrides: str, cache_dir: Path | None = None) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="reproduce", overrides=[*SMALL, *overrides])
    config = build_run_config(OmegaConf.to_container(cfg, resolve=True))
    GlobalHydra.instance().clear()
    if cache_dir is not None:
        config["paths"]["cache"] = str(cache_dir)
    return config


def planned(*overrides: str, multirun: bool = True) -> list[PlannedRun]:
    """The runs a command line plans (with -m by default), checked and named as a launch would save them.
    Paper datasets are not on this machine: their missing roots are the only problems allowed."""
    plan = plan_sweep(["launcher=local", *overrides], multirun=multirun)
    assert all(" root is set" in problem for problem in plan.problems), plan.problems
    return plan.runs
