"""Planning a sweep once, before anything runs: the jobs a command line means, each run's config and
directory, what each run's directory already holds, and every problem that can be known in advance.

The grid is the table's own (``hydra.sweeper.params`` in configs/table/*.yaml) with the command line's
sweeps composed in, expanded as Hydra's basic sweeper would (a later value list for the same key wins;
the cartesian product in key order). Every job is composed through Hydra's public compose API, turned
into its run config (experiments/run_config.py) and named by its identity (xsample.rundir.identity). The
resulting ``config.json`` is what the job executes: nothing is composed again on a compute node.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict

from experiments.run_config import (
    CONFIGS_DIR,
    ConfigError,
    InvalidValues,
    build_run_config,
    value_problems,
)
from xsample.config import REPLAN, RunConfig, RunConfigError
from xsample.io import atomic_write_json, read_json
from xsample.run_inputs import input_problems
from xsample.rundir.heartbeat import process_gone
from xsample.rundir.identity import run_name, variant, variant_label, variant_tag
from xsample.rundir.lifecycle import RunState, run_state
from xsample.rundir.provenance import config_hash
from xsample.rundir.result import CONFIG_NAME
from xsample.rundir.reuse import adopt_completed_run, completed_runs, find_twin

TABLES = sorted(path.stem for path in (CONFIGS_DIR / "table").glob("*.yaml"))
LAUNCHERS = sorted(path.stem for path in (CONFIGS_DIR / "launcher").glob("*.yaml"))
PLAN_FILE = "sweep_plan.json"
# What the reference of a run keeps from its overrides besides the table's own grid keys.
REFERENCE_KEYS = ("table", "scale")
# Overrides that say how and where a sweep is launched and reported, never what a run trains: none reaches
# the run config outside its runtime-only sections (xsample.rundir.provenance.RUNTIME_ONLY_KEYS).
LAUNCH_ONLY_KEYS = ("launcher", "runs_in_flight", "plan", "detach", "force", "extra_sweeps", "paths.sweeps",
                    "paths.figures")
# Run states (xsample.rundir.lifecycle.RunState) whose runs a launch runs or submits.
LAUNCHED_STATES = ("new", "resume", "rerun")


def override_key(override: str) -> str:
    """The key an override sets: ``+row=x``, ``++row=x``, ``~row`` and ``row=x`` all set ``row``."""
    return override.split("=", 1)[0].lstrip("+~")


def option(overrides: list[str], key: str) -> str | None:
    """The last value the overrides give ``key`` (None when they give none)."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o and override_key(o) == key]
    return values[-1] if values else None


def quote_table_ids(overrides: list[str]) -> list[str]:
    """`table=2` names the config file table/2.yaml; Hydra would read 2 as an int and refuse it."""
    quoted = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "table" and value:
            value = ",".join(f"'{v}'" if v.isdigit() else v for v in value.split(","))
            override = f"{key}={value}"
        quoted.append(override)
    return quoted


def expand_grid(grid: dict[str, str], overrides: list[str]) -> list[list[str]]:
    """The override list of every job: the table's grid, then the command line's overrides (a later value
    list for a key replaces an earlier one), as a cartesian product in the order the keys first appear."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([f"{key}={values}" for key, values in grid.items()] + overrides)
    choices: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        values = (override.sweep_string_iterator() if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        choices[key] = [f"{key}={value}" if not key.startswith("~") or value != "null" else key for value in values]
    return [list(job) for job in itertools.product(*choices.values())]


class PlanningContext:
    """Hydra's compose API over configs/, opened once for a whole plan (initialize_config_dir is a context)."""

    def __init__(self) -> None:
        self._references: dict[tuple[str, ...], dict[str, Any]] = {}

    def compose(self, overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the resolved composed config without its hydra node, what a plan reads of the hydra node: the
        table's ``grid`` (hydra.sweeper.params), the ``sweep_dir`` and the ``launcher`` settings)."""
        cfg = compose(config_name="reproduce", overrides=overrides, return_hydra_config=True)
        hydra_node = {"grid": OmegaConf.to_container(cfg.hydra.sweeper.params or {}, resolve=True),
                      "sweep_dir": str(cfg.hydra.sweep.dir),
                      "launcher": OmegaConf.to_container(cfg.hydra.launcher, resolve=True)}
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True), hydra_node

    def reference(self, overrides: tuple[str, ...]) -> dict[str, Any]:
        """The run config of a reference (many jobs of a sweep share one; read only, never modified)."""
        if overrides not in self._references:
            self._references[overrides] = build_run_config(self.compose(list(overrides))[0])
        return self._references[overrides]


@contextmanager
def planning() -> Iterator[PlanningContext]:
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
        yield PlanningContext()


@dataclass
class PlannedRun:
    """One run: its config (what config.json holds), its directory, its job's resources and launcher
    settings, and what its directory already holds (``state``)."""

    config: dict[str, Any]
    run_dir: Path
    overrides: list[str]
    composed: dict[str, Any]
    launcher: dict[str, Any]           # the composed hydra.launcher node (SLURM/submitit settings)
    resources: dict[str, Any]
    base: PlannedRun | None = None     # the run a fine-tuning run starts from
    state: RunState | None = None
    job: str | None = None             # the SLURM job that holds it, when an earlier launch submitted it
    twin: Path | None = None           # state reused: the completed run (another table's) it adopts

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def sweep_dir(self) -> Path:
        return self.run_dir.parent.parent

    @property
    def report_dir(self) -> Path:
        return Path(self.composed["paths"]["figures"]) / self.composed["scale"]["name"]

    @property
    def hash(self) -> str:
        return config_hash(self.config)

    @property
    def run_config(self) -> RunConfig:
        """``config`` as the library reads it (parsed again at each use: ``config`` is the saved record)."""
        return RunConfig.from_dict(self.config)


def _launch_only(key: str) -> bool:
    return key in LAUNCH_ONLY_KEYS or key.startswith("hydra.launcher.")


def plan_run(context: PlanningContext, overrides: list[str]) -> PlannedRun:
    """Compose one job's run and name it by its identity; InvalidValues lists every setting out of range.

    The reference is the same table, scale and grid point without the job's other overrides; every
    difference of the resolved run config against it is the run's variant (xsample.rundir.identity)."""
    composed, hydra_node = context.compose(overrides)
    problems = value_problems(composed)
    if problems:
        raise InvalidValues(problems)
    config = build_run_config(composed)
    grid = list(hydra_node["grid"])
    reference_overrides = tuple(o for o in overrides if override_key(o) in (*REFERENCE_KEYS, *grid))
    if all(_launch_only(override_key(o)) for o in overrides if o not in reference_overrides):
        departures = {}  # composing again without the launch-only overrides would give this very identity
    else:
        departures = variant(config, context.reference(reference_overrides))
    config["experiment"].update(variant=variant_label(departures), variant_tag=variant_tag(departures))
    job_resources = config["resources"]
    run_dir = Path(hydra_node["sweep_dir"]) / "runs" / run_name(config["experiment"])
    planned = PlannedRun(config, run_dir, overrides, composed, hydra_node["launcher"], job_resources)
    if composed.get("finetune_from"):
        planned.base = plan_run(context, [o for o in overrides if override_key(o) != "row"]
                                + [f"row={composed['finetune_from']}"])
        config["init_from"] = {"run_dir": str(planned.base.run_dir), "config_hash": planned.base.hash}
    try:  # what the job will parse, checked before anything is saved
        RunConfig.from_dict(config)
    except RunConfigError as error:
        if error.fix != REPLAN:
            raise InvalidValues([str(error)]) from None
        raise InvalidValues([f"run config key {error.key} {error.problem}: the files under configs/ this plan "
                             "composed do not set it as this version of xsample reads it; set it in the YAML of "
                             "its section (configs/reproduce.yaml or the group file)"]) from None
    return planned


@dataclass
class SweepPlan:
    runs: list[PlannedRun] = field(default_factory=list)   # in launch order: base runs before their fine-tunes
    problems: list[str] = field(default_factory=list)      # one line each; a plan with problems runs nothing

    def by_state(self, *states: str) -> list[PlannedRun]:
        return [run for run in self.runs if run.state is not None and run.state.name in states]

    @property
    def to_launch(self) -> list[PlannedRun]:
        return self.by_state(*LAUNCHED_STATES)

    @property
    def sweep_dirs(self) -> list[Path]:
        return sorted({run.sweep_dir for run in self.runs})

    def phases(self) -> list[list[PlannedRun]]:
        """Runs to launch, in phases: a run whose base is launched too waits for the phase before."""
        launching = {run.run_dir for run in self.to_launch}
        first = [run for run in self.to_launch if run.base is None or run.base.run_dir not in launching]
        second = [run for run in self.to_launch if run not in first]
        return [phase for phase in (first, second) if phase]


def job_overrides(context: PlanningContext, overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command line means: itself, or with -m the table's grid
    (read from the config the command line's fixed values compose) with its sweeps composed in; with
    extra_sweeps=true, then each of the table's extra sweeps at this scale the same way."""
    if not multirun:
        return [overrides]
    composed, hydra_node = context.compose(_fixed(overrides))
    jobs = expand_grid(hydra_node["grid"], overrides)
    for sweep in extra_sweep_overrides(composed, overrides):
        jobs += expand_grid(context.compose(_fixed(sweep))[1]["grid"], sweep)
    return jobs


def _fixed(overrides: list[str]) -> list[str]:
    """The overrides that set one value (not a sweep over several)."""
    return [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]


def extra_sweep_overrides(composed: dict[str, Any], overrides: list[str]) -> list[list[str]]:
    """With extra_sweeps=true (in the config ``overrides`` composed), the command line followed by each sweep of
    the table's ``table.extra_sweeps.<scale>`` (the rows its known-answer checks compare), whose values come last."""
    wanted = composed["extra_sweeps"]
    if not isinstance(wanted, bool):
        raise ConfigError(f"extra_sweeps={wanted} must be true or false")
    if not wanted:
        return []
    table, scale = composed["table"], composed["scale"]["name"]
    sweeps = (table.get("extra_sweeps") or {}).get(scale) or []
    if not sweeps:
        raise ConfigError(f"{table['name']} has no extra sweeps at scale={scale} (table.extra_sweeps in its "
                          "configs/table/ file); drop extra_sweeps=true")
    return [[*overrides, *sweep.split()] for sweep in sweeps]


def plan_sweep(overrides: list[str], *, multirun: bool, force: bool = False) -> SweepPlan:
    """Every run the command line describes (a fine-tuning job's base run included, once), checked and
    classified by what its directory holds.

    A config that cannot be composed raises ConfigError (one line); every other problem (values out of
    range, missing inputs, a value that cannot act) is collected in ``problems`` so that all show at once."""
    plan, seen = SweepPlan(), set()
    problems: dict[str, None] = {}
    try:
        with planning() as context:
            for job in job_overrides(context, overrides, multirun):
                try:
                    planned = plan_run(context, job)
                except InvalidValues as error:  # every job is checked, so that all problems show at once
                    problems.update(dict.fromkeys(error.problems))
                    continue
                for run in (planned.base, planned):
                    if run is not None and run.run_dir not in seen:
                        seen.add(run.run_dir)
                        plan.runs.append(run)
    except HydraException as error:
        raise ConfigError(config_error_line(error)) from None
    for run in plan.runs:
        problems.update(dict.fromkeys(input_problems(run.run_config)))
    plan.problems = list(problems)
    jobs_of_earlier_launches = _submitted_jobs(plan.sweep_dirs)
    for run in plan.runs:
        run.state = run_state(run.run_dir, run.run_config, force=force)
    if not force:  # force=true trains every run anew
        _find_twins([run for run in plan.runs if run.state.name == "new"])
    for run in plan.runs:
        run.job = jobs_of_earlier_launches.get(run.name)
        if run.state.name in LAUNCHED_STATES and run.job is not None:
            gone, why = process_gone({"slurm_job_id": run.job})
            if gone is False:
                run.state = RunState("queued", f"an earlier launch's job holds it ({why})")
    return plan


def _find_twins(new_runs: list[PlannedRun]) -> None:
    """Mark each new run whose twin has completed under its sweeps root as reused (xsample/rundir/reuse.py);
    the roots are read only when some run is new."""
    completed = {root: completed_runs(root) for root in {run.sweep_dir.parent for run in new_runs}}
    for run in new_runs:
        twin = find_twin(run.config, completed[run.sweep_dir.parent])
        if twin is not None:
            run.state, run.twin = RunState("reused", f"trains exactly as the completed run {twin}, whose result "
                                                     "it adopts (force=true trains it anew)"), twin


def config_error_line(error: HydraException | ConfigError) -> str:
    """One line for a config that cannot be composed; Hydra's own message goes on with its search path."""
    first = str(error).splitlines()[0]
    options = getattr(error, "options", None)
    if options:
        return f"{first}; choose one of: {', '.join(options)}"
    if first.startswith("Could not override"):  # an unknown key: Hydra's config is strict
        key = first.split("'")[1] if first.count("'") >= 2 else ""
        if key.rsplit(".", 1)[0] in OPEN_MAPPINGS:
            return f"{first} It is not a key of the config yet; add it with +{key}=VALUE"
        return f"{first} It is not a key of the config (a typo?); see configs/ for the keys there are"
    return first


# Mappings of the config that take keys of the user's choosing: adding one needs Hydra's `+key=value`.
OPEN_MAPPINGS = ("hydra.launcher.additional_parameters",)


def added_key_problems(overrides: list[str]) -> list[str]:
    """``+key=value`` adds a key Hydra's strict config does not have: accepted only inside OPEN_MAPPINGS,
    where such keys are meant to be added; anywhere else it would be a setting nothing reads."""
    return [f"{override}: {override_key(override)} is not a key of the config, and nothing would read it; "
            f"keys can be added only under {', '.join(OPEN_MAPPINGS)}"
            for override in overrides if override.startswith("+")
            and override_key(override).rsplit(".", 1)[0] not in OPEN_MAPPINGS]


def _submitted_jobs(sweep_dirs: list[Path]) -> dict[str, str]:
    """Run name -> the SLURM job an earlier launch of these sweeps submitted for it (from their plans)."""
    jobs = {}
    for sweep_dir in sweep_dirs:
        plan = read_json(sweep_dir / PLAN_FILE) or {}
        for entry in plan.get("runs") or []:
            if isinstance(entry, dict) and entry.get("slurm_job_id"):
                jobs[Path(str(entry.get("run_dir"))).name] = str(entry["slurm_job_id"])
    return jobs


class SavedPlan:
    """The files a launch writes before submitting anything (each run's config.json, each sweep's plan),
    and how to take them back when the submission is refused (nothing is left behind)."""

    def __init__(self, plan: SweepPlan):
        self.plan = plan
        self.created: list[Path] = []

    def write(self) -> None:
        """Each launched run's config.json (a rerun's old directory is discarded first: force=true), each
        reused run's adopted result (kept if the submission is refused: it is complete), then the sweep plans."""
        for run in self.plan.by_state("reused"):
            adopt_completed_run(run.twin, run.run_dir, run.config)
        for run in self.plan.to_launch:
            if run.state.name == "rerun":
                shutil.rmtree(run.run_dir)
            path = run.run_dir / CONFIG_NAME
            self._remember_new_directories(run.run_dir)
            if not path.exists():
                self.created.append(path)
            atomic_write_json(path, run.config)
        self.write_sweep_plans()

    def write_sweep_plans(self, jobs: dict[str, str] | None = None) -> None:
        """``sweep_plan.json`` of every sweep: its runs, their identities and hashes, and (after a SLURM
        submission) the job holding each run, so that a relaunch does not submit a queued run twice."""
        jobs = jobs or {}
        for sweep_dir in self.plan.sweep_dirs:
            path = sweep_dir / PLAN_FILE
            self._remember_new_directories(sweep_dir)
            if not path.exists() and path not in self.created:
                self.created.append(path)
            members = [run for run in self.plan.runs if run.sweep_dir == sweep_dir]
            first = members[0].config["experiment"]
            atomic_write_json(path, {
                "table": first["table"], "scale": first["scale"],
                "runs": [{"run_dir": f"runs/{run.name}", "experiment": run.config["experiment"],
                          "config_hash": run.hash, "overrides": run.overrides,
                          "slurm_job_id": jobs.get(run.name, run.job)} for run in members],
            })

    def _remember_new_directories(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            path.mkdir()
            self.created.append(path)

    def take_back(self) -> None:
        """Remove every file and directory this launch created (newest first)."""
        for path in reversed(self.created):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
