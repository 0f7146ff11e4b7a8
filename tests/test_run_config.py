"""The typed run config (xsample/config.py): a config.json of another shape is refused with one line naming the
key. That every table's planned configs parse and give back exactly what was saved is checked where each
table's grid is planned (tests/test_sweep_configs.py test_table_sweep_expands, tiny and paper scale)."""

from __future__ import annotations

import copy
import json

import pytest

from tests.engine_helpers import small_run_config
from xsample.config import RunConfig, RunConfigError
from xsample.rundir.lifecycle import execute_run


@pytest.fixture(scope="module")
def saved() -> dict:
    """A complete planned run config (X-CLR, Table 1 at tiny scale) as its config.json holds it."""
    return json.loads(json.dumps(small_run_config("table='1'", "method=xclr")))


def _without(config: dict, dotted: str) -> dict:
    changed = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = changed
    for part in parents:
        node = node[part]
    del node[last]
    return changed


def _with(config: dict, dotted: str, value) -> dict:
    changed = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = changed
    for part in parents:
        node = node[part]
    node[last] = value
    return changed


REPLAN = ("this config.json was planned by another version of xsample (or edited by hand); plan the run again with "
          "the command that planned it (python experiments/reproduce.py -m table=...)")


@pytest.mark.parametrize("change, message", [
    (lambda c: _without(c, "optim.lr_scaling"), f"run config key optim.lr_scaling is missing: {REPLAN}"),
    (lambda c: _without(c, "method.mask_self"), f"run config key method.mask_self is missing: {REPLAN}"),
    (lambda c: _with(c, "model.stem_strides", 2),
     "run config key model.stem_strides is not a key of the run config (model has backbone, small_image_stem, "
     f"stem_stride, pretrained, projector, clip): {REPLAN}"),
    (lambda c: _with(c, "optim.batch_size", "64"), f"run config key optim.batch_size is '64', not an integer: {REPLAN}"),
    (lambda c: _with(c, "model.small_image_stem", 1),
     f"run config key model.small_image_stem is 1, not true or false: {REPLAN}"),
    (lambda c: _with(c, "eval.probe.learning_rates", [0.1, "x"]),
     f"run config key eval.probe.learning_rates[1] is 'x', not a number: {REPLAN}"),
    (lambda c: _with(c, "runtime.precision", "fp8"),
     f"run config key runtime.precision is 'fp8', not one of 'auto', 'fp32', 'bf16', 'fp16': {REPLAN}"),
    (lambda c: _with(c, "data.fraction", 0.0),
     "run config key data.fraction is 0.0, not in (0, 1]: set data_fraction in (0, 1]"),
    (lambda c: _with(c, "data.options", {"size": float("nan")}),
     "run config key data.options.size is nan, not a finite number: give a finite value"),
    (lambda c: _with(c, "seed", -1), "run config key seed is -1, not in [0, 2147483647]: set seed=0, 1, ..."),
    (lambda c: _with(c, "graph_stats", {"bins": 50, "max_pairs": 10}),
     f"run config key graph_stats must be present exactly in task=graph_stats runs (task=pretrain): {REPLAN}"),
])
def test_a_missing_unknown_or_mistyped_key_is_refused_naming_it(saved, change, message):
    assert RunConfig.from_dict(saved).to_dict() == saved
    with pytest.raises(RunConfigError) as refused:
        RunConfig.from_dict(change(saved))
    assert str(refused.value) == message


def test_a_method_gets_exactly_the_settings_its_registry_entry_trains_with(saved):
    """X-CLR's graph settings are required of X-CLR and refused on SimCLR (nothing would read them)."""
    simclr = small_run_config("table='1'", "method=simclr")
    with pytest.raises(RunConfigError, match=r"^run config key method.graph_temperature is not a key of the run "
                                             r"config \(method has name, temperature\)"):
        RunConfig.from_dict(_with(simclr, "method.graph_temperature", 0.1))
    with pytest.raises(RunConfigError, match=r"^run config key method.name is 'nope', which this version does not "
                                             r"know: method.name='nope' is not a registered method"):
        RunConfig.from_dict(_with(saved, "method.name", "nope"))


def test_a_job_refuses_a_config_json_of_another_version_before_writing_anything(saved, tmp_path):
    run_dir = tmp_path / "run"
    lines = []
    outcome = execute_run(_without(saved, "optim.lr_scaling"), run_dir, log=lines.append)
    assert outcome.status == "refused"
    assert lines == [f"xsample: run: refused: run config key optim.lr_scaling is missing: {REPLAN}"]
    assert not run_dir.exists()
