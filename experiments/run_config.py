"""From one composed Hydra config (as a plain dict) to the run config the xsample library executes.

Everything here is a pure function of the composed config, so the mapping from a table's sweep
point to a run (which data at which scale, which recipe, which directory) is testable without Hydra.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
SCALES = ("tiny", "rehearsal", "paper")


class ConfigError(ValueError):
    """A config the harness cannot run (unknown dataset or scale); reproduce.py prints it as one line."""


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


def _method_file(name: str) -> dict[str, Any]:
    """A method's settings as configs/method/<name>.yaml defines them (plain YAML)."""
    settings = yaml.safe_load((CONFIGS_DIR / "method" / f"{name}.yaml").read_text())
    settings.pop("optim_recipe", None)
    return settings


def experiment_labels(cfg: dict[str, Any]) -> dict[str, Any]:
    """The labels the analysis groups by: table, scale, method, dataset (paper name), setting, seed."""
    table, scale = cfg["table"], cfg["scale"]["name"]
    dataset = cfg["dataset"]
    used = table.get("tiny_dataset") if scale == "tiny" and table.get("tiny_dataset") else dataset
    return {
        "table": str(table["id"]),
        "scale": scale,
        "method": {"compute": "all", "graph_stats": "none"}.get(table["task"], cfg["method"]["name"]),
        "dataset": dataset,
        "dataset_used": _data_for(cfg, used)["name"] if scale == "tiny" else dataset,
        "setting": None if table.get("setting") in (None, "None") else str(table["setting"]),
        "seed": int(cfg["seed"]),
    }


def run_name(labels: dict[str, Any]) -> str:
    """Readable, deterministic directory name of one run within its sweep."""
    parts = [labels["method"], labels["dataset"]]
    if labels["setting"]:
        parts.append(labels["setting"])
    parts.append(f"seed{labels['seed']}")
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", "_".join(parts))


def sweep_dir(cfg: dict[str, Any]) -> Path:
    return Path(cfg["paths"]["sweeps"]) / f"table{cfg['table']['id']}_{cfg['scale']['name']}"


def build_run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The resolved, self-contained config of one run (what result.json records and hashes)."""
    scale_cfg, table, method = cfg["scale"], cfg["table"], cfg["method"]
    scale = scale_cfg["name"]
    if scale not in SCALES:
        raise ConfigError(f"unknown scale={scale!r}; choose one of {', '.join(SCALES)}")
    labels = experiment_labels(cfg)
    dataset_key = table.get("tiny_dataset") if scale == "tiny" and table.get("tiny_dataset") else cfg["dataset"]
    data = _data_for(cfg, dataset_key)
    data["fraction"] = float(cfg.get("data_fraction", 1.0))
    eval_suite = data.pop("eval_suite")
    data.pop("gpu_hours_per_epoch", None)

    recipe_name = method["optim_recipe"]
    optim = copy.deepcopy(scale_cfg["optim"][recipe_name])
    finetuning = bool(cfg.get("finetune_from"))
    optim.update(batch_size=int(scale_cfg["batch_size"]),
                 epochs=int(scale_cfg["finetune_epochs"] if finetuning else scale_cfg["epochs"]))

    method_cfg = {k: v for k, v in method.items() if k != "optim_recipe"}
    suite = cfg["eval_suites"][eval_suite]
    wanted = list(table.get("evaluations") or [])
    evaluations = [dict(suite["evaluations"][name], name=name) for name in wanted if name in suite["evaluations"]]
    run = {
        "experiment": labels,
        "task": table["task"],
        "seed": int(cfg["seed"]),
        "method": method_cfg,
        "graph": copy.deepcopy(cfg["graph"]) if method["name"] == "xclr" or table["task"] == "graph_stats" else None,
        "data": data,
        "model": copy.deepcopy(cfg["model"]),
        "optim": optim,
        "eval": {"evaluations": evaluations, "probe": copy.deepcopy(scale_cfg["probe"]),
                 "knn_k": 20, "zero_shot": method["name"] == "clip" and "imagenet" in wanted,
                 "not_available": [name for name in wanted if name not in suite["evaluations"]]},
        "init_from": None,
        "runtime": copy.deepcopy(cfg["runtime"]),
        "paths": copy.deepcopy(cfg["paths"]),
    }
    if table["task"] == "compute":
        run["compute"] = copy.deepcopy(cfg["compute"])
        run["compute"]["method_configs"] = {name: _method_file(name) for name in run["compute"]["methods"]}
        run["graph"] = copy.deepcopy(cfg["graph"])
    if table["task"] == "graph_stats":
        run["graph_stats"] = copy.deepcopy(cfg["graph_stats"])
    return run


def resources(cfg: dict[str, Any]) -> dict[str, Any]:
    """SLURM resources of one job and its rough GPU-hour estimate (plan mode)."""
    res = dict(cfg["scale"]["resources"])
    scale = cfg["scale"]["name"]
    table = cfg["table"]
    dataset_key = table.get("tiny_dataset") if scale == "tiny" and table.get("tiny_dataset") else cfg["dataset"]
    per_epoch = float(_data_for(cfg, dataset_key).get("gpu_hours_per_epoch", 0.0))
    epochs = cfg["scale"]["finetune_epochs"] if cfg.get("finetune_from") else cfg["scale"]["epochs"]
    uses_gpus = table["task"] == "pretrain" and int(res.get("gpus_per_node") or 0) > 0  # rehearsal: paper data, no GPU
    res["est_gpu_hours"] = round(per_epoch * epochs * float(cfg.get("data_fraction", 1.0)), 1) if uses_gpus else 0.0
    return res
