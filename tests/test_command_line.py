"""The command line a cluster user types (issue 23) and the plan-once launch (issue 21): Hydra's own flags,
values refused before anything is written, and jobs that execute the config saved for them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import REPO

# A Fashion-MNIST run of a few steps (Table 2's tiny analog).
FEW_STEPS = ["scale=tiny", "scale.epochs=1", "scale.batch_size=128", "datasets.fashion_mnist.tiny.options.max_samples=512",
             "eval_suites.fashion_mnist.evaluations.imagenet.train.options.max_samples=512",
             "eval_suites.fashion_mnist.evaluations.imagenet.test.options.max_samples=256", "scale.probe.epochs=5"]


def _reproduce(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / "reproduce.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def _tree(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


@pytest.mark.parametrize("args, message", [
    (["table=2", "scale=tiny", "dataset=bogus"], "unknown dataset='bogus'; choose one of cc12m, cc3m, fashion_mnist, imagenet"),
    (["-m", "table=2", "scale=tiny", "dataset=cc3m"], "dataset=cc3m cannot act on Table 2: it pretrains on imagenet"),
    (["table=1", "+foo=1"], "+foo=1: foo is not a key of the config, and nothing would read it"),
    (["table=1", "seed=-1"], "seed must be in [0, 2147483647], got -1; e.g. seed=1"),
    (["table=1", "runtime.precision=bogus"], "runtime.precision='bogus' is not a choice; use one of auto, fp32, bf16, fp16"),
    (["table=1", "runtime.device=tpu"], "runtime.device='tpu' is not a choice; use one of auto, cpu, cuda"),
    (["table=1", "hydra.launcher.additional_parameters.mail-user=me", "launcher=slurm"],
     "It is not a key of the config yet; add it with +hydra.launcher.additional_parameters.mail-user=VALUE"),
])
def test_a_value_that_cannot_act_is_one_line_exit_1_and_nothing_is_created(tmp_path, args, message):
    out = _reproduce(*args, "launcher=local" if "launcher=slurm" not in args else "plan=true", f"paths.sweeps={tmp_path}")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_planning_loads_none_of_the_libraries_only_runs_need(tmp_path):
    # torchvision alone took 3 of a refusal's 9 seconds on a 2-core host: a login node's command (plan, check,
    # refuse, submit) should not pay for it. An X-CLR run on CC3M at paper scale checks captions and its text encoder.
    script = ("import sys; from experiments.plan import plan_sweep; "
              f"plan_sweep([\"table='3'\", 'scale=paper', 'method=xclr', 'dataset=cc3m', 'launcher=local', "
              f"'paths.sweeps={tmp_path}'], multirun=False); "
              "print(sorted(name for name in ('torchvision', 'timm', 'open_clip', 'sentence_transformers', 'webdataset') "
              "if name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args", [["--cfg", "job", "table=2"], ["--help", "scale=paper"], ["-m", "table=1", "--info"],
                                  ["table=3", "--cfg", "hydra", "--package", "hydra.launcher"]])
def test_hydra_flags_print_and_exit_0_without_checks_or_files(tmp_path, args):
    environment = {key: value for key, value in os.environ.items() if not key.endswith("_ROOT")}
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "reproduce.py"), *args, f"paths.sweeps={tmp_path}/s"],
                         cwd=tmp_path, capture_output=True, text=True, env=environment)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() and "xsample:" not in out.stdout + out.stderr  # Hydra's output; no checks ran
    assert list(tmp_path.iterdir()) == []
    if args[0] == "--help":
        assert "reproduce a table or figure of the X-CLR paper" in out.stdout and "scale: paper" in out.stdout
    if args[:2] == ["--cfg", "job"]:
        assert "id: '2'" in out.stdout


def test_slurm_settings_are_accepted_with_the_auto_launcher_and_shown_in_the_plan(tmp_path):
    out = _reproduce("-m", "table=2", "scale=paper", "plan=true", "hydra.launcher.partition=gpu",
                     "hydra.launcher.account=proj", f"paths.sweeps={tmp_path}")
    assert "SLURM settings: partition=gpu, account=proj" in out.stdout, out.stdout + out.stderr
    assert "It is not a key" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_job_runs_the_config_planned_for_it_even_when_configs_change_before_it_starts(tmp_path, monkeypatch):
    """Plan once: the job reads runs/<name>/config.json, never configs/ (edited here between plan and run)."""
    from experiments import plan as planning
    from experiments.launch import SavedRunJob

    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    monkeypatch.setattr(planning, "CONFIGS_DIR", configs)
    plan = planning.plan_sweep(["launcher=local", "table='2'", "row=augmentation", f"paths.sweeps={tmp_path / 'sweeps'}",
                                f"paths.cache={tmp_path / 'cache'}", *FEW_STEPS], multirun=False)
    assert not plan.problems
    planning.SavedPlan(plan).write()
    (run,) = plan.runs
    simclr = configs / "method" / "simclr.yaml"
    simclr.write_text(simclr.read_text().replace("temperature: 0.1", "temperature: 0.5"))
    assert SavedRunJob()(str(run.run_dir)) == "completed"
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["config_hash"] == run.hash
    assert result["config"]["method"]["temperature"] == 0.1
    replanned = planning.plan_sweep(["launcher=local", "table='2'", "row=augmentation",
                                     f"paths.sweeps={tmp_path / 'sweeps'}", *FEW_STEPS], multirun=False)
    assert replanned.runs[0].config["method"]["temperature"] == 0.5  # the edit is real; the job ignored it


def test_the_launch_path_has_no_argv_rewriting_and_no_private_hydra():
    sources = {path: path.read_text() for folder in ("experiments", "xsample") for path in (REPO / folder).rglob("*.py")}
    assert not [path for path, text in sources.items() if "sys.argv =" in text or "sys.argv=" in text]
    assert not [path for path, text in sources.items() if "hydra._internal" in text]


def test_a_method_defined_only_in_this_test_trains_evaluates_and_reaches_the_report(tmp_path, monkeypatch):
    """Issue 21: a new method is one YAML file plus one registry entry, nothing else changed."""
    from analysis.report import write_report
    from experiments import plan as planning
    from experiments.launch import run_in_process
    from xsample import methods

    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    (configs / "method" / "views_warm.yaml").write_text(
        "name: views_warm\ntemperature: 0.5\noptim_recipe: lars\n")
    monkeypatch.setattr(planning, "CONFIGS_DIR", configs)
    sweeps = tmp_path / "sweeps"
    overrides = ["launcher=local", "table='2'", "row=augmentation", "method=views_warm", "seed=0",
                 f"paths.sweeps={sweeps}", f"paths.cache={tmp_path / 'cache'}", *FEW_STEPS]
    unregistered = planning.plan_sweep(overrides, multirun=True)
    assert any("is not a registered method" in problem and "xsample.methods" in problem
               for problem in unregistered.problems), unregistered.problems
    monkeypatch.setitem(methods.METHODS, "views_warm", methods.Method("views_warm", role="label_free", targets="views"))
    plan = planning.plan_sweep(overrides, multirun=True)
    assert not plan.problems, plan.problems
    (run,) = plan.runs
    planning.SavedPlan(plan).write()
    run_in_process(plan.to_launch)
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "completed", result.get("error")
    assert result["experiment"]["method"] == "views_warm" and result["experiment"]["method_role"] == "label_free"
    assert result["metrics"]["imagenet"]["top1"] > 0
    write_report(sweeps, tmp_path / "report", scale="tiny")
    assert "| views_warm" in (tmp_path / "report" / "table2_tiny.md").read_text()
