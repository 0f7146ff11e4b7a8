"""From one composed Hydra config (as a plain dict) to the run config the xsample library executes.

Everything here is a pure function of the composed config, so the mapping from a table's sweep
point to a run (which data at which scale, which recipe) and the checks of its values are testable
without Hydra. Which directory a run gets is decided in sweep.plan_run (it compares two compositions).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from xsample.config import BUDGETS, RANDOM_GRANULARITIES
from xsample.data.registry import UNLABELLED_DATASETS
from xsample.eval.zero_shot import zero_shot_problem
from xsample.methods import METHODS, UnknownMethodError, reads_captions, reads_labels
from xsample.methods import method as registered_method
from xsample.train.sampling import augment_problem
from xsample.train.sanity import SANITY_CHECKS
from xsample.train.tracking import logger_problem
from xsample.validation import (
    InvalidConfigError,
    integer_seed,
    non_finite_problem,
    non_finite_values,
    runtime_problems,
)
from xsample.views.recipe import AugmentRecipe

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A config the harness cannot run (unknown dataset, or none at this scale); reproduce.py prints it as one line."""


class InvalidValues(ConfigError):
    """Settings outside their ranges, one line each (``problems``), found before anything is built."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _data_for(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The dataset entry of the scale's data profile (scale.data_profile, default the scale's name);
    scale.image_size, when set, replaces the entry's image size (the rehearsal runs paper data small)."""
    profile = cfg["scale"].get("data_profile") or cfg["scale"]["name"]
    catalog = cfg["datasets"]
    if dataset not in catalog:
        raise ConfigError(f"unknown dataset={dataset!r}; choose one of {', '.join(sorted(catalog))}")
    entry = catalog[dataset].get(profile)
    if entry is None:
        raise ConfigError(f"dataset={dataset} has no {profile}-scale version (configs/datasets/{dataset}.yaml)")
    entry = copy.deepcopy(entry)
    if cfg["scale"].get("image_size"):
        entry["image_size"] = int(cfg["scale"]["image_size"])
    return entry


def _training_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """The catalog entry this run trains on: the scale picks it (configs/scale/*.yaml: scale.train_dataset)."""
    return _data_for(cfg, cfg["scale"]["train_dataset"])


# Loss settings a baseline declares only so that a sweep such as `method.temperature=0.1,0.2` composes for
# every row of a table; nothing trains, so they are not part of a baseline's run (nor of its identity).
TRAINING_ONLY_KEYS = ("temperature",)


def _method_settings(method: dict[str, Any]) -> dict[str, Any]:
    """A method's settings as the run records them (its optimiser recipe becomes the run's optim section)."""
    trains = method.get("optim_recipe") is not None
    return {key: value for key, value in method.items()
            if key != "optim_recipe" and (trains or key not in TRAINING_ONLY_KEYS)}


def experiment_labels(cfg: dict[str, Any]) -> dict[str, Any]:
    """The readable labels of a run: table, scale, method, dataset (paper name), setting, seed.

    The run's variant (what else departs from the table's grid point) is added by sweep.plan_run."""
    table = cfg["table"]
    method = {"compute": "all", "graph_stats": "none"}.get(table["task"], cfg["method"]["name"])
    return {
        "table": str(table["id"]),
        "scale": cfg["scale"]["name"],
        "method": method,
        # How reports compare the row (xsample.methods.ROLES), so that analysis needs no registry.
        "method_role": METHODS[method].role if method in METHODS else None,
        "method_targets": METHODS[method].targets if method in METHODS else None,
        # How reports lay out the table and set its values against the paper's (declared in configs/).
        "layout": table["layout"],
        "comparability": cfg["scale"]["comparability"],
        "dataset": cfg["dataset"],
        "dataset_used": _training_data(cfg)["name"],
        "setting": None if table.get("setting") in (None, "None") else str(table["setting"]),
        "seed": int(cfg["seed"]),
        "variant": None,
        "variant_tag": None,
    }


def build_run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The resolved, self-contained config of one run (what result.json records and hashes)."""
    scale_cfg, table, method = cfg["scale"], cfg["table"], cfg["method"]
    trait = registered_method(method["name"])
    labels = experiment_labels(cfg)
    data = _training_data(cfg)
    data["fraction"] = float(cfg["data_fraction"])
    eval_suite = data.pop("eval_suite")
    # Facts about the catalog entry, not the data a run reads: the plan's estimate, and the analog's epochs, warmup,
    # LARS lr and X-CLR graph temperature (the scale takes them; the run records them once, as optim.epochs,
    # optim.warmup_epochs, optim.lr and method.graph_temperature).
    for key in ("gpu_hours_per_epoch", "epochs", "warmup_epochs", "lars_lr", "graph_temperature"):
        data.pop(key, None)

    # Baselines that train nothing (untrained, raw_pixels) have no recipe and no optim section.
    optim = None
    if method["optim_recipe"] is not None:
        optim = copy.deepcopy(scale_cfg["optim"][method["optim_recipe"]])
        optim.update(batch_size=int(scale_cfg["batch_size"]), epochs=int(cfg["epochs"]), budget=cfg["budget"])

    suite = cfg["eval_suites"][eval_suite]
    wanted = list(table.get("evaluations") or [])
    evaluations = [dict(suite["evaluations"][name], name=name) for name in wanted if name in suite["evaluations"]]
    run = {
        "experiment": labels,
        "task": table["task"],
        "seed": int(cfg["seed"]),
        "sanity": cfg["sanity"],
        "method": _method_settings(method),
        # The training views' recipe; a run that trains nothing draws none (nor forks on the choice).
        "augment": copy.deepcopy(cfg["augment"]) if optim is not None else None,
        "graph": copy.deepcopy(cfg["graph"]) if trait.uses_graph or table["task"] == "graph_stats" else None,
        "data": data,
        "model": copy.deepcopy(cfg["model"]),
        "optim": optim,
        "eval": {"evaluations": evaluations, "probe": copy.deepcopy(scale_cfg["probe"]),
                 # false, or eval.zero_shot's settings for a CLIP run tested on ImageNet (or its analog)
                 "zero_shot": copy.deepcopy(cfg["eval"]["zero_shot"]) if trait.zero_shot and "imagenet" in wanted else False,
                 "not_available": [name for name in wanted if name not in suite["evaluations"]]},
        "init_from": None,
        "runtime": copy.deepcopy(cfg["runtime"]),
        "paths": copy.deepcopy(cfg["paths"]),
        # Where the job runs (placement, outside the config hash): a run asking for GPUs refuses the CPU.
        "resources": resources(cfg),
    }
    if table["task"] == "compute":
        contenders = cfg["compute"]["method_configs"]
        run["compute"] = {**copy.deepcopy(cfg["compute"]), "methods": list(contenders),
                          "method_configs": {name: _method_settings(settings) for name, settings in contenders.items()},
                          # the step is timed at the batch one GPU of the training job holds (this job has one GPU)
                          "training_ranks": int(scale_cfg["resources"]["nodes"]) * int(scale_cfg["resources"]["tasks_per_node"])}
        run["graph"] = copy.deepcopy(cfg["graph"])
    if table["task"] == "graph_stats":
        run["graph_stats"] = copy.deepcopy(cfg["graph_stats"])
    return run


def resources(cfg: dict[str, Any]) -> dict[str, Any]:
    """SLURM resources of one job, its rough GPU-hour estimate (training and evaluation) and the number of
    requeues its time limit implies (plan mode). A job that trains nothing (a baseline row, the graph
    statistics, the compute table's one-GPU timing) gets one GPU's share of the training node."""
    res = dict(cfg["scale"]["resources"])
    data = _training_data(cfg)
    trains = cfg["table"]["task"] == "pretrain" and cfg["method"]["optim_recipe"] is not None
    gpus = int(res["gpus_per_node"])
    if not trains:
        share = max(1, int(res["tasks_per_node"]))
        res.update(nodes=1, gpus_per_node=min(gpus, 1), tasks_per_node=1, mem_gb=max(1, int(res["mem_gb"]) // share))
    # budget=steps trains every data fraction for the steps of the whole set
    passes = float(cfg["epochs"]) * (float(cfg["data_fraction"]) if cfg["budget"] == "epochs" else 1.0)
    train_hours = float(data["gpu_hours_per_epoch"]) * passes if trains else 0.0
    evaluates = cfg["table"]["task"] == "pretrain"
    eval_hours = float(cfg["eval_suites"][data["eval_suite"]]["gpu_hours"]) if evaluates else 0.0
    # Only GPU jobs cost GPU-hours (the rehearsal trains the paper's datasets on CPUs).
    on_gpus = int(res["gpus_per_node"]) * int(res["nodes"])
    res["est_gpu_hours"] = round(train_hours + eval_hours, 1) if on_gpus else 0.0
    wall_minutes = 60.0 * res["est_gpu_hours"] / on_gpus if on_gpus else 0.0
    res["requeues"] = max(0, math.ceil(wall_minutes / float(res["timeout_min"])) - 1)
    return res


def _number(value: Any) -> float | None:
    """The finite number ``value`` stands for, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def value_problems(cfg: dict[str, Any]) -> list[str]:
    """One line per setting outside its range, named as it is set on the command line."""
    problems = []
    if cfg["method"]["name"] not in METHODS:
        problems.append(str(UnknownMethodError.for_name(cfg["method"]["name"])))
    methods = {"method": cfg["method"]}
    methods.update({f"compute.method_configs.{name}": settings
                    for name, settings in ((cfg.get("compute") or {}).get("method_configs") or {}).items()})
    for where, settings in methods.items():
        for key, value in _method_settings(settings).items():  # what the run uses (baselines use no temperature)
            if value is None and str(cfg["dataset"]) not in cfg["datasets"]:
                continue  # read from the unknown dataset's catalog entry (tiny graph_temperature): refused below
            if "temperature" in key and not ((number := _number(value)) is not None and number > 0):
                problems.append(f"{where}.{key} must be > 0, got {value}")
    if cfg["budget"] not in BUDGETS:
        problems.append(f"budget={cfg['budget']!r} is not a training budget; choose one of {', '.join(BUDGETS)}")
    if cfg.get("sanity") not in SANITY_CHECKS:
        problems.append(f"sanity={cfg.get('sanity')!r} is not a sanity check; choose one of {', '.join(SANITY_CHECKS)}")
    checks = [
        ("caption_noise", lambda v: 0 <= v <= 1, "in [0, 1]"),
        ("epochs", lambda v: v >= 1 and v == int(v), "an integer >= 1 (set scale.epochs, or scale.finetune_epochs for a fine-tuning row)"),
        ("scale.batch_size", lambda v: v >= 1 and v == int(v), "an integer >= 1"),
    ]
    for key, holds, wanted in checks:
        value = _lookup(cfg, key)
        number = _number(value)
        if number is None or not holds(number):
            problems.append(f"{key} must be {wanted}, got {value}")
    problems += [non_finite_problem(key, value) for key, value in non_finite_values(cfg).items()
                 if not any(problem.startswith(f"{key} ") for problem in problems)]
    try:
        integer_seed(cfg.get("seed"))
    except InvalidConfigError as error:
        problems.append(str(error))
    problems += [problem for problem in (logger_problem(cfg), augment_problem(cfg), zero_shot_problem(cfg))
                 if problem is not None]
    problems += runtime_problems(cfg["runtime"])
    table, dataset = cfg["table"], str(cfg["dataset"])
    shown = dataset if len(dataset) <= 40 else f"{dataset[:37]}..."
    if dataset not in cfg["datasets"]:
        problems.append(f"unknown dataset={shown!r}; choose one of {', '.join(sorted(cfg['datasets']))}")
    elif dataset not in table["datasets"]:
        problems.append(f"dataset={shown} cannot act on {table['name']}: it pretrains on "
                        f"{', '.join(table['datasets'])} (configs/table/{table['id']}.yaml table.datasets)")
    else:
        problems += inert_setting_problems(cfg)
    try:
        AugmentRecipe.from_config(cfg["augment"])
    except ValueError as error:
        problems.append(str(error))
    return problems


def inert_setting_problems(cfg: dict[str, Any]) -> list[str]:
    """One line per setting that would not act on this run: such a run would be labelled with what it did
    not do (a noisy-caption row trained on clean captions), so it is refused before anything is submitted."""
    problems = []
    method, graph, dataset, task = cfg["method"]["name"], cfg["graph"], cfg["dataset"], cfg["table"]["task"]
    graph_stats = task == "graph_stats"  # Fig. 5: no method trains, the graph itself is measured
    graph_method = method in METHODS and METHODS[method].uses_graph
    noise = _number(cfg.get("caption_noise"))
    if noise is not None and noise > 0:
        data = _training_data(cfg)
        if "caption_noise" not in (data.get("options") or {}):
            problems.append(f"caption_noise={cfg['caption_noise']} cannot act: dataset={dataset} at {cfg['scale']['name']} "
                            f"scale trains on {data['name']}, which is not read with caption noise "
                            f"(configs/datasets/{dataset}.yaml); caption noise acts on dataset=cc3m or cc12m")
        elif not (graph["source"] == "captions" if graph_stats else reads_captions(method, graph["source"])):
            reader = f"graph={graph['source']}" if graph_stats or graph_method else f"method={method}"
            problems.append(f"caption_noise={cfg['caption_noise']} cannot act: {reader} reads no caption "
                            "(captions are read by method=clip and by X-CLR with graph=captions); leave caption_noise=0")
    uses_graph = graph_stats or graph_method
    if uses_graph and graph["source"] == "random" and graph["granularity"] not in RANDOM_GRANULARITIES:
        problems.append(f"graph.granularity={graph['granularity']!r} is not a granularity; choose one of "
                        f"{', '.join(RANDOM_GRANULARITIES)}")
    data_name = _training_data(cfg)["name"]
    if data_name in UNLABELLED_DATASETS and (reads_labels(method, graph) or (graph_stats and graph["source"] == "class_names")):
        reader = f"graph={graph['source']}" if graph_stats or graph_method else f"method={method}"
        problems.append(f"{reader} reads class labels, and dataset={dataset} at {cfg['scale']['name']} scale trains on "
                        f"{data_name}, which has none; use graph=captions (X-CLR) or a labelled dataset")
    if cfg.get("sanity") == "permuted_graph" and not (task == "pretrain" and graph_method
                                                      and graph["source"] in ("class_names", "captions")):
        what = f"graph={graph['source']}" if graph_method else f"method={method} trains on no graph"
        problems.append(f"sanity=permuted_graph cannot act: it permutes the text graph X-CLR trains on "
                        f"(graph=class_names or captions), and {what}")
    return problems


def _lookup(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
