"""Run identity and lifecycle (issue 13): a config owns its directory, no override destroys a result,
failures are loud, variants are reported as their own rows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import REPO, planned, small_run_config
from xsample.rundir.identity import run_name, variant_tag
from xsample.rundir.lifecycle import execute_run
from xsample.rundir.provenance import config_hash

# Tiny runs of a few steps: small Fashion-MNIST subset, one epoch, short probe.
FEW_STEPS = ["scale=tiny", "scale.epochs=1", "scale.batch_size=128", "datasets.fashion_mnist.tiny.options.max_samples=512",
             "eval_suites.fashion_mnist.evaluations.imagenet.train.options.max_samples=512",
             "eval_suites.fashion_mnist.evaluations.imagenet.test.options.max_samples=256", "scale.probe.epochs=5"]


def _reproduce(sweeps: Path, *overrides: str) -> subprocess.CompletedProcess:
    flags = [o for o in overrides if o.startswith("-")]
    return subprocess.run([sys.executable, "experiments/reproduce.py", *flags, "launcher=local", f"paths.sweeps={sweeps}",
                           f"paths.cache={sweeps / 'cache'}", f"paths.figures={sweeps / 'figures'}",
                           *(o for o in overrides if not o.startswith("-"))],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _results(sweep: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sorted((sweep / "runs").glob("*/result.json"))}


def test_variant_tags_are_readable_when_short_and_never_leave_the_sweep():
    assert variant_tag({"method.temperature": 0.2}) == "method.temperature=0.2"
    assert variant_tag({}) is None
    for hostile in ({"method.name": "../../x"}, {"graph.template": "a/b"}, {"k": "x" * 200},
                    {f"key{i}": i for i in range(5)}):
        tag = variant_tag(hostile)
        assert tag.startswith("v-") and "/" not in tag and ".." not in tag and len(tag) <= 60
    assert variant_tag({"a": 1}) != variant_tag({"a": 2})
    name = run_name({"method": "../../x", "dataset": "imagenet", "setting": None, "seed": 0,
                     "variant_tag": variant_tag({"method.name": "../../x"})})
    assert "/" not in name and ".." not in name


def test_a_command_line_sweep_over_a_non_grid_key_gives_distinct_directories():
    runs = planned("table='1'", "method.temperature=0.1,0.2")
    trained = [run for run in runs if run.config["experiment"]["method"] != "untrained"]
    assert len(trained) == 18
    assert len({run.run_dir for run in trained}) == 18
    untrained = {run.name for run in runs if run.config["experiment"]["method"] == "untrained"}
    assert untrained == {f"untrained_imagenet_seed{seed}" for seed in range(3)}, "nothing trains: one run each"
    variants = {run.config["experiment"]["variant"] for run in runs}
    assert variants == {None, "method.temperature=0.2"}, "0.1 is the harness default: those are the table's own runs"
    assert "xclr_imagenet_seed0+method.temperature=0.2" in {run.name for run in runs}


def test_a_graph_override_is_a_variant_of_xclr_only():
    runs = {run.config["experiment"]["method"]: run for run in planned("table='1'", "graph=random", "seed=0")}
    assert runs["simclr"].config["experiment"]["variant"] is None, "SimCLR does not use the graph: the same run"
    assert "graph.source=random" in runs["xclr"].config["experiment"]["variant"]
    assert runs["xclr"].name != "xclr_imagenet_seed0"


def test_another_configs_directory_is_refused_untouched_even_with_force(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    theirs = small_run_config("table='2'", "row=augmentation")
    finished = {"status": "completed", "experiment": theirs["experiment"], "metrics": {"imagenet": {"top1": 75.0}},
                "config": theirs, "config_hash": config_hash(theirs)}
    (run_dir / "result.json").write_text(json.dumps(finished))
    before = (run_dir / "result.json").read_bytes()
    mine = small_run_config("table='2'", "row=augmentation", "scale.epochs=3")
    lines: list[str] = []
    for force in (False, True):
        outcome = execute_run(mine, run_dir, force=force, log=lines.append)
        assert outcome.status == "refused"
        assert "optim.epochs 2 -> 3" in outcome.error
    assert (run_dir / "result.json").read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["result.json"]


def test_a_completed_run_of_the_same_config_is_skipped_and_force_reruns_it(tmp_path, monkeypatch):
    config = small_run_config("table='2'", "row=augmentation")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(json.dumps({"status": "completed", "config": config,
                                                     "config_hash": config_hash(config)}))
    (run_dir / "checkpoint.pt").write_bytes(b"old")
    outcome = execute_run(config, run_dir, log=lambda line: None)
    assert outcome.status == "completed" and outcome.skipped
    seen = []
    monkeypatch.setattr("xsample.rundir.lifecycle.run_experiment",
                        lambda config, directory: seen.append(sorted(p.name for p in Path(directory).glob("*"))) or {"status": "completed"})
    outcome = execute_run(config, run_dir, force=True, log=lambda line: None)
    assert outcome.status == "completed" and not outcome.skipped
    assert seen == [[]], "force=true discards the previous run of the same config before running it again"


@pytest.mark.long
def test_an_override_of_a_finished_run_completes_in_its_own_directory(tmp_path):
    """Scenario 1 of issue 13: the same command with another epoch count keeps the first result."""
    first = _reproduce(tmp_path, "table=2", "row=random_sample", *FEW_STEPS)
    assert first.returncode == 0, first.stdout + first.stderr
    second = _reproduce(tmp_path, "table=2", "row=random_sample", *FEW_STEPS[:1], "scale.epochs=2", *FEW_STEPS[2:])
    assert second.returncode == 0, second.stdout + second.stderr
    results = _results(tmp_path / "table2_tiny")
    assert len(results) == 2 and all(name.startswith("xclr_imagenet_random_sample_seed0+") for name in results)
    assert all(r["status"] == "completed" and r["metrics"]["imagenet"]["top1"] > 0 for r in results.values())
    assert {r["config"]["optim"]["epochs"] for r in results.values()} == {1, 2}


@pytest.mark.slow
def test_a_temperature_sweep_gives_distinct_directories_and_report_rows(tmp_path):
    out = _reproduce(tmp_path, "-m", "table=2", "row=augmentation", "seed=0", "method.temperature=0.1,0.2", *FEW_STEPS)
    assert out.returncode == 0, out.stdout + out.stderr
    results = _results(tmp_path / "table2_tiny")
    assert len(results) == 2 and all(r["status"] == "completed" for r in results.values())
    report = (tmp_path / "figures" / "tiny" / "table2_tiny.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| simclr")]
    assert len(rows) == 2, report
    assert sum("method.temperature=0.2" in row for row in rows) == 1, rows


@pytest.mark.slow
def test_a_sweep_whose_runs_all_fail_reports_without_a_traceback_and_exits_non_zero(tmp_path):
    out = _reproduce(tmp_path, "-m", "table=2", "row=augmentation,true_class", "seed=0", "scale.optim.lars.lr=1e30",
                     "scale.checkpoint_every_steps=1000", *FEW_STEPS)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "xsample: 2 run(s) did not complete:" in out.stderr
    for name in ("augmentation", "true_class"):
        line = next(line for line in out.stderr.splitlines() if f"_{name}_seed0" in line)
        assert "failed: " in line and "loss became" in line and line.endswith("result.json)")
    report = (tmp_path / "figures" / "tiny" / "table2_tiny.md").read_text()
    assert "Counts: completed 0, running 0, stale 0, failed 2" in report


def test_twins_differ_only_in_labels_and_in_settings_that_cannot_act():
    from xsample.rundir.reuse import training_identity

    table2 = training_identity(small_run_config("table='2'", "row=augmentation"))
    assert training_identity(small_run_config("table=fig3", "method=simclr", "data_fraction=1.0")) == table2
    assert training_identity(small_run_config("table=fig3", "method=simclr", "data_fraction=1.0",
                                              "method.temperature=0.2")) != table2
    scarce = {budget: training_identity(small_run_config("table=fig3", "method=simclr", "data_fraction=0.5",
                                                         f"budget={budget}")) for budget in ("steps", "epochs")}
    assert scarce["steps"] != scarce["epochs"] != table2, "below the whole set the budget decides the steps"


def test_a_twin_that_ran_more_evaluations_gives_only_the_asked_ones(tmp_path):
    """Table 4's clean X-CLR row trains Table 3's CC3M X-CLR row and asks for one of its five evaluations."""
    from xsample.rundir.reuse import TwinGone, adopt_completed_run, completed_runs, find_twin

    table3 = small_run_config("table='3'", "row=xclr", "dataset=cc3m")
    table4 = small_run_config("table='4'", "row=xclr_clean")
    names = [evaluation["name"] for evaluation in table3["eval"]["evaluations"]]
    assert len(names) == 5 and [e["name"] for e in table4["eval"]["evaluations"]] == ["imagenet"]
    source = tmp_path / "table3_tiny" / "runs" / "xclr_cc3m_seed0"
    source.mkdir(parents=True)
    metrics = {name: {"top1": 40.0 + index} for index, name in enumerate(names)} | {"graph_diagnostics": {"batches": 8}}
    (source / "result.json").write_text(json.dumps({
        "status": "completed", "experiment": table3["experiment"], "config": table3, "config_hash": config_hash(table3),
        "metrics": metrics, "eval_details": {name: {"images_skipped": {"test": 1}} for name in names},
        "data": {"dataset": "shapes", "eval_images_skipped": 5}}))
    completed = completed_runs(tmp_path)
    assert find_twin(table4, completed) == source
    assert find_twin(table3, {key: [(source, [])] for key in completed}) is None, "a twin must have run them all"
    adopted = adopt_completed_run(source, tmp_path / "table4_tiny" / "runs" / "xclr_cc3m_noise=0.0_seed0", table4)
    assert adopted["metrics"] == {"imagenet": {"top1": 40.0}, "graph_diagnostics": {"batches": 8}}
    assert list(adopted["eval_details"]) == ["imagenet"] and adopted["data"]["eval_images_skipped"] == 1
    (source / "result.json").unlink()  # deleted between planning and launching: one line naming the fix
    with pytest.raises(TwinGone, match="no longer holds the completed run .* launch the same command again"):
        adopt_completed_run(source, tmp_path / "table4_tiny" / "runs" / "xclr_cc3m_noise=0.0_seed1", table4)


@pytest.mark.long
def test_a_run_another_table_already_completed_is_adopted_not_trained_again(tmp_path):
    """Fig. 3's full-data SimCLR point trains exactly Table 2's augmentation row (budget=steps and budget=epochs
    are the same steps at data_fraction 1.0): it adopts that result, relabelled; a smaller fraction, or
    force=true, trains."""
    table2 = _reproduce(tmp_path, "-m", "table=2", "row=augmentation", "seed=0", *FEW_STEPS)
    assert table2.returncode == 0, table2.stderr
    [source] = (tmp_path / "table2_tiny" / "runs").iterdir()   # named with its FEW_STEPS variant tag
    fig3 = _reproduce(tmp_path, "-m", "table=fig3", "method=simclr", "seed=0", "data_fraction=1.0", *FEW_STEPS)
    assert fig3.returncode == 0, fig3.stderr
    assert "1 reused" in fig3.stdout and "step 1/" not in fig3.stdout, "nothing trains"
    [run_dir] = (tmp_path / "tablefig3_tiny" / "runs").iterdir()
    adopted, original = (json.loads((path / "result.json").read_text()) for path in (run_dir, source))
    assert adopted["metrics"] == original["metrics"]
    assert adopted["experiment"]["table"] == "fig3" and adopted["config"]["optim"]["budget"] == "steps"
    assert adopted["config_hash"] == config_hash(adopted["config"]) != original["config_hash"]
    assert adopted["reused_from"]["run_dir"] == str(source.resolve())
    assert json.loads((run_dir / "config.json").read_text()) == adopted["config"]
    # The copies name the adopting run's config: its checkpoint resumes, fine-tunes and exports as its own.
    from xsample.export import export_run
    from xsample.rundir.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir, adopted["config_hash"])["step"] == original["checkpoint_step"]
    exported = {path.name for path in export_run(run_dir, tmp_path / "export")}
    assert "probe.safetensors" in exported
    again = _reproduce(tmp_path, "-m", "table=fig3", "method=simclr", "seed=0", "data_fraction=1.0", *FEW_STEPS)
    assert "1 completed" in again.stdout
    scarce = _reproduce(tmp_path, "-m", "table=fig3", "method=simclr", "seed=0", "data_fraction=0.1", "launcher=plan",
                        *FEW_STEPS)
    assert "1 new" in scarce.stdout, "a smaller fraction trains other data: no twin"
    shutil.rmtree(run_dir)
    forced = _reproduce(tmp_path, "-m", "table=fig3", "method=simclr", "seed=0", "data_fraction=1.0", "force=true",
                        "launcher=plan", *FEW_STEPS)
    assert "1 new" in forced.stdout, "force=true trains anew"


@pytest.mark.parametrize("launch", [["launcher=slurm", "plan=true", "detach=true", "force=true", "paths.sweeps=/elsewhere",
                                     "paths.figures=/figures", "hydra.launcher.partition=gpu"],
                                    ["launcher=local", "runs_in_flight=2"]])
def test_launch_only_overrides_never_reach_a_runs_identity(launch):
    """The planner takes a job's own config as its reference when its other overrides are launch-only
    (experiments.plan.LAUNCH_ONLY_KEYS): that holds only if composing without them gives the same identity."""
    from experiments import plan as planning
    from experiments.run_config import build_run_config

    grid_point = ["table='2'", "scale=tiny", "row=minilm", "seed=1"]
    assert {planning.override_key(o) for o in launch} <= {*planning.LAUNCH_ONLY_KEYS, "hydra.launcher.partition"}
    with planning.planning() as context:
        plain = build_run_config(context.compose(grid_point)[0])
        launched = build_run_config(context.compose([*grid_point, *launch])[0])
    assert config_hash(launched) == config_hash(plain)
    assert run_name(launched["experiment"]) == run_name(plain["experiment"])
