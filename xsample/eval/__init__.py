"""Frozen-feature evaluation: feature extraction, linear probes, k-NN, zero-shot and the paper's protocols."""

from xsample.eval.features import extract_features
from xsample.eval.knn import knn_predict
from xsample.eval.metrics import (
    imagenet9_metrics,
    mapped_predictions,
    real_top1_accuracy,
    top1_accuracy,
    zero_shot_top1,
)
from xsample.eval.probe import LinearProbe, fit_linear_probe
from xsample.eval.protocols import PROTOCOLS, DatasetSpec, ScoredProbe, run_evaluations, validate_evaluations

__all__ = [
    "PROTOCOLS",
    "DatasetSpec",
    "LinearProbe",
    "extract_features",
    "fit_linear_probe",
    "imagenet9_metrics",
    "knn_predict",
    "mapped_predictions",
    "ScoredProbe",
    "real_top1_accuracy",
    "run_evaluations",
    "top1_accuracy",
    "validate_evaluations",
    "zero_shot_top1",
]
