"""Every table's sweep composes, at both scales, into the runs the paper's table needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from experiments.plan import TABLES
from experiments.run_config import build_run_config
from tests.engine_helpers import planned
from xsample.config import RunConfig
from xsample.data.shapes import TRAIN_SIZES
from xsample.rundir.provenance import config_hash

REPO = Path(__file__).resolve().parents[1]

# Every pretraining table carries its untrained baseline (and the Fashion-MNIST analogs a raw_pixels row). At tiny
# scale every table with known-answer checks runs 3 seeds (no verdict from one), fine-tuning 5 (its SimCLR base
# spreads); at paper scale Table 1 runs 3. Fig. 3 sweeps 3 data fractions at either scale (tiny: 0.05, 0.1,
# 1.0; paper: 0.25, 0.5, 1.0).
RUNS_PER_SEED = {"1": 4, "2": 9, "3": 8, "4": 5, "finetune": 5, "compute": 1, "fig3": 15, "fig5": 2}
TINY_SEEDS = {"compute": 1, "fig5": 1, "finetune": 5}
# A table's own sweep, planned once for every test of this module that reads it (they only read the runs).
planned_table = lru_cache(maxsize=None)(planned)
EXPECTED_JOBS = {"tiny": {table: runs * TINY_SEEDS.get(table, 3) for table, runs in RUNS_PER_SEED.items()},
                 "paper": {**RUNS_PER_SEED, "1": 12}}


def test_every_table_has_a_config():
    assert sorted(RUNS_PER_SEED) == TABLES


@pytest.mark.parametrize("scale", ["tiny", "paper"])
@pytest.mark.parametrize("table", sorted(RUNS_PER_SEED))
def test_table_sweep_expands(table, scale):
    runs = planned_table(f"table='{table}'" if table.isdigit() else f"table={table}", f"scale={scale}")
    assert len(runs) == EXPECTED_JOBS[scale][table]
    run_dirs = [run.run_dir for run in runs]
    assert len(set(run_dirs)) == len(run_dirs), "two jobs of one sweep share a run directory"
    assert {run.config["experiment"]["variant"] for run in runs} == {None}, "a table's own grid has no variants"
    assert {run.config["experiment"]["scale"] for run in runs} == {scale}
    assert {run.config["experiment"]["table"] for run in runs} == {table}
    assert len({run.sweep_dir for run in runs}) == 1
    for run in runs:  # the typed config a job parses gives back exactly what was saved (so the same config hash)
        saved = json.loads(json.dumps(run.config))
        assert RunConfig.from_dict(saved).to_dict() == saved, run.name


def test_command_line_sweeps_compose_with_the_table_grid():
    assert len(planned("table='1'", "seed=0,1")) == 8


def test_tiny_scale_maps_paper_datasets_onto_analogs():
    jobs = {tuple(run.config["experiment"][k] for k in ("method", "dataset")): run.config
            for run in planned_table("table='3'", "scale=tiny")}
    assert jobs[("xclr", "cc3m")]["experiment"]["dataset_used"] == "shapes"
    runs2 = [run.config["experiment"] for run in planned_table("table='2'", "scale=tiny")]
    assert {labels["dataset_used"] for labels in runs2} == {"fashion_mnist"}
    assert {labels["setting"] for labels in runs2} == {"random_sample", "random_class", "permuted", "augmentation",
                                                       "true_class", "bag_of_words", "minilm", "untrained", "raw_pixels"}


def test_a_tiny_analog_sets_its_own_pretraining_length_and_an_override_still_wins():
    configs = {overrides: build_run_config(_composed(list(overrides)))
               for overrides in (("table='1'", "method=supcon"),
                                 ("table=fig3", "method=supcon", "datasets.fashion_mnist.tiny.epochs=20"),
                                 ("table='2'", "row=minilm", "datasets.fashion_mnist.tiny.epochs=20"),
                                 ("table='2'", "row=minilm", "scale.epochs=3"),
                                 ("table='1'", "method=supcon", "scale=paper"))}
    assert [config["optim"]["epochs"] for config in configs.values()] == [12, 20, 20, 3, 100]
    assert not any("epochs" in config["data"] for config in configs.values()), "recorded once, as optim.epochs"


def test_the_cc12m_analog_trains_the_cc3m_analogs_steps_and_schedule_on_four_times_the_images():
    """Table 3's data axis holds compute fixed at tiny scale (as Fig. 3's budget=steps): the same optimiser steps
    and warmup steps within 2%, and X-CLR's calibrated tau_s and LARS lr on both caption graphs (the shapes class
    world keeps its own lr)."""
    schedule = {}
    for run in planned("table='3'", "scale=tiny", "row=xclr,clip", "seed=0"):
        config = run.config
        images = TRAIN_SIZES[config["data"]["options"]["size"]]
        steps_per_epoch = images // config["optim"]["batch_size"]
        schedule[(config["experiment"]["method"], config["experiment"]["dataset"])] = (
            images, steps_per_epoch * config["optim"]["epochs"], steps_per_epoch * config["optim"]["warmup_epochs"])
        if config["experiment"]["method"] == "xclr":
            assert config["method"]["graph_temperature"] == 0.2
            assert (config["optim"]["name"], config["optim"]["lr"]) == ("lars", 8.0)
    assert {run.config["optim"]["lr"] for run in planned("table='1'", "scale=tiny", "method=xclr", "seed=0")} == {16.0}
    for method in ("xclr", "clip"):
        (small, small_steps, small_warmup), (large, large_steps, large_warmup) = (
            schedule[(method, "cc3m")], schedule[(method, "cc12m")])
        assert large == 4 * small
        assert large_steps == pytest.approx(small_steps, rel=0.02)
        assert large_warmup == pytest.approx(small_warmup, rel=0.02)


def _composed(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="reproduce", overrides=overrides), resolve=True)


def test_config_hash_ignores_runtime_but_not_hyperparameters():
    base = build_run_config(_composed(["table='1'", "method=xclr"]))
    faster = build_run_config(_composed(["table='1'", "method=xclr", "runtime.num_workers=4"]))
    other = build_run_config(_composed(["table='1'", "method=xclr", "method.temperature=0.2"]))
    assert config_hash(base) == config_hash(faster)
    assert config_hash(base) != config_hash(other)


def test_unknown_table_is_a_one_line_error():
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "-m", "table=9"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "unknown table 9; choose one of: 1, 2, 3, 4" in out.stderr


def _without_roots() -> dict:
    return {key: value for key, value in os.environ.items() if not key.endswith("_ROOT")}


def test_plan_mode_prints_jobs_and_gpu_hours_and_every_missing_root_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "-m", "table=1", "scale=paper", "launcher=plan",
                          f"paths.sweeps={tmp_path}"], cwd=REPO, capture_output=True, text=True, env=_without_roots())
    first = out.stdout.splitlines()[0]
    assert first.startswith("xsample: launcher=plan") and str(tmp_path) in first
    # 9 trained runs x (2 GPU-hours per epoch x 100 epochs + 1 of evaluation) + 3 untrained runs' evaluation.
    assert "12 runs, estimated total 1812.0 GPU-hours" in out.stdout
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if "_imagenet_seed" in line}
    assert rows["xclr_imagenet_seed0"][1:] == ["new", "1", "8", "80", "480", "4320", "201.0", "0"]
    assert rows["untrained_imagenet_seed0"][3] == "1", "a baseline row needs one GPU, not a node"
    assert out.returncode != 0
    for name in ("imagenet", "imagenet_real", "imagenet9", "objectnet", "mit_states"):
        assert f"xsample: dataset {name}: no root is set. Set paths.{name}=" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_with_missing_roots_exits_before_creating_any_run_directory(tmp_path):
    """Scenario 2 of issue 13: every root missing for training and for every evaluation, named up front."""
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "-m", "table=1", "scale=paper", "launcher=local",
                          "seed=0", f"paths.sweeps={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                         env=_without_roots())
    assert out.returncode != 0
    problems = [line for line in out.stderr.splitlines() if "no root is set" in line]
    assert len(problems) == 5, out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override, message", [
    ("method.temperature=0", "method.temperature must be > 0, got 0"),
    ("data_fraction=1.5", "run config key data.fraction is 1.5, not in (0, 1]: set data_fraction in (0, 1]"),
    ("caption_noise=-0.1", "caption_noise must be in [0, 1], got -0.1"),
    ("caption_noise=0.5", "caption_noise=0.5 cannot act: dataset=imagenet at tiny scale trains on shapes"),
    ("scale.epochs=0", "epochs must be an integer >= 1"),
    ("runtime.logger=mlflow", "runtime.logger='mlflow' is not supported; choose one of tensorboard, wandb, none, "
                              "or a list such as [tensorboard,wandb]"),
    ("eval.zero_shot.templates=imagenet80", "eval.zero_shot.templates='imagenet80' is not a template set; choose one "
                                            "of openai_imagenet, single, shapes_captions"),
    ("augment.colour_jitter.probability=1.5", "augment.colour_jitter.probability (supcon) must be in [0, 1], got 1.5"),
])
def test_out_of_range_values_are_refused_before_anything_runs(tmp_path, override, message):
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "table=1", "method=xclr", override,
                          f"paths.sweeps={tmp_path}"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    assert f"xsample: {message}" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_wandb_without_the_extra_is_one_line_naming_the_install_command(tmp_path):
    blocker = tmp_path / "without_wandb"
    blocker.mkdir()
    # An environment without the [wandb] extra: `import wandb` fails and importlib finds no such module.
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "table=1", "runtime.logger=[tensorboard,wandb]",
                          f"paths.sweeps={tmp_path / 'sweeps'}"], cwd=REPO, capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert out.stderr.splitlines() == ["xsample: runtime.logger=['tensorboard', 'wandb'] needs Weights & Biases, which "
                                       'is not installed; install it with: pip install -e ".[wandb]"']
    assert not (tmp_path / "sweeps").exists()


def test_hydra_sweep_dir_is_refused_with_a_pointer_to_paths_sweeps(tmp_path):
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "-m", "table=1", f"hydra.sweep.dir={tmp_path}/x"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "paths.sweeps=DIR" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override, message", [
    ("scale=huge", "In 'reproduce': Could not find 'scale/huge'; choose one of: paper, rehearsal, tiny"),
    ("dataset=nope", "unknown dataset='nope'; choose one of cc12m, cc3m, fashion_mnist, imagenet"),
    ("method.nope=1", "Could not override 'method.nope'. It is not a key of the config (a typo?); "
                      "see configs/ for the keys there are"),
])
def test_a_config_that_cannot_compose_is_a_one_line_error(override, message):
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "-m", "table=1", override, "launcher=plan"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip() == f"xsample: {message}"


def test_extra_sweeps_true_plans_the_grid_then_each_extra_sweep_as_one_sweep():
    """configs/table/*.yaml extra_sweeps (the rows known-answer checks compare; make demo and make preview
    launch them with extra_sweeps=true) plan without problems, and one launch holds exactly the jobs of the
    grid and of each extra sweep launched on its own."""
    from experiments.plan import job_overrides, plan_run, planning
    from experiments.preview import extra_sweeps

    declared = {table: extra for table in TABLES if (extra := extra_sweeps(table))}
    assert "1" in declared, "Table 1's sanity rows are declared"
    for table, sweeps in declared.items():
        command = ["launcher=local", f"table='{table}'", "scale=tiny"]
        with planning() as context:
            one_launch = job_overrides(context, [*command, "extra_sweeps=true"], multirun=True)
            grid = job_overrides(context, command, True)
            separately = [*grid, *(job for extra in sweeps for job in job_overrides(context, [*command, *extra], True))]
            assert [[o for o in job if not o.startswith("extra_sweeps=")] for job in one_launch] == separately
            for job in one_launch[len(grid):]:  # the grid's own runs: test_table_sweep_expands
                plan_run(context, job)  # raises InvalidValues, naming every problem


@pytest.mark.parametrize("args, message", [
    (["table=1", "scale=tiny", "extra_sweeps=true"], "extra_sweeps=true adds the table's extra sweeps to its sweep: "
                                                     "add -m"),
    (["-m", "table=1", "scale=paper", "extra_sweeps=true"], "Table 1 has no extra sweeps at scale=paper "
                                                            "(table.extra_sweeps in its configs/table/ file); drop "
                                                            "extra_sweeps=true"),
    (["-m", "table=2", "scale=tiny", "extra_sweeps=yes"], "extra_sweeps=yes must be true or false"),
])
def test_extra_sweeps_that_cannot_act_are_refused_in_one_line_before_planning(tmp_path, capsys, args, message):
    from experiments import reproduce

    with pytest.raises(SystemExit) as refused:
        reproduce.main([*args, "launcher=plan", f"paths.sweeps={tmp_path}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert refused.value.code == 1 and lines == [f"xsample: {message}"], lines
    assert list(tmp_path.iterdir()) == []
