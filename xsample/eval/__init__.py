"""Frozen-feature evaluation: feature extraction, linear probes, k-NN, zero-shot and the paper's protocols.

The names below load their module on first use: the planner reads only ``zero_shot`` (which template sets
exist), and the rest imports torchvision, which takes seconds on a login node."""

import importlib
from typing import Any

_MODULE_OF = {
    "extract_features": "features",
    "knn_predict": "knn",
    "imagenet9_metrics": "metrics",
    "mapped_predictions": "metrics",
    "real_top1_accuracy": "metrics",
    "top1_accuracy": "metrics",
    "zero_shot_top1": "metrics",
    "LinearProbe": "probe",
    "fit_linear_probe": "probe",
    "PROTOCOLS": "protocols",
    "DatasetSpec": "protocols",
    "ScoredProbe": "protocols",
    "run_evaluations": "protocols",
    "validate_evaluations": "protocols",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'xsample.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"xsample.eval.{_MODULE_OF[name]}"), name)
