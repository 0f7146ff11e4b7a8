"""Protocol adapters: a list of evaluation specs in, the ``metrics`` block of result.json out.

Each evaluation spec is a plain mapping (the run config holds them, e.g. from Hydra YAML). ``name`` picks the
protocol and is also the metrics key. A *dataset spec* is ``{name, split, root?, options?}`` and is passed to
``build_dataset(name, split, root=root, **options)``; a missing/null ``root`` is looked up in ``data_roots[name]``.

  name: imagenet        -> {"top1", "knn_top1"}
    train: <dataset spec>           probe (and k-NN bank) training data
    test: <dataset spec>
    label_key: label                item field holding the class (default "label")
    knn: {k: 20, temperature: 0.07} weighted k-NN (see xsample.eval.knn); false/null: off (no knn_top1)
  name: imagenet_real   -> {"top1"}: correct when the top-1 class is in the item's list; empty lists left out
    train, test, label_key          as above (label_key is the train split's class field)
    real_labels_key: real_labels    test item field holding the list of valid classes
  name: imagenet9       -> one accuracy per variant + "bg_gap" = mixed_same - mixed_rand
    train, label_key                as above
    variants: {original: <dataset spec>, only_fg: ..., no_fg: ..., mixed_same: ..., mixed_rand: ...}
                                    (mixed_same and mixed_rand are required; test labels are super-classes)
    class_map: null                 per probe class its super-class (or -1): a list with one int per probe
                                    class; "from_dataset": the test dataset's ``imagenet_class_map`` attribute
                                    (paper-scale IN-9 / ObjectNet); null = identity (probe classes = test classes)
    restrict_predictions: true      argmax over mapped probe classes only (false: an unmapped top-1 is wrong)
  name: objectnet       -> {"top1"} on the classes the probe shares with the test set
    train, test, label_key, class_map, restrict_predictions   as for imagenet9
  name: mit_states      -> {"objects", "attributes"}: the dataset is split into two seeded random halves,
                           one fits a probe per label, the other is scored
    data: <dataset spec>
    object_key: label, attribute_key: attribute, train_fraction: 0.5
  name: heldout_classes -> {"top1", "knn_top1"} on classes the pretraining never saw: the dataset (those classes
                           only) is split into two seeded halves, one fits the probe and the k-NN bank, the
                           other is scored; with ``seen``, also "family_knn_top1": the share of the held-out
                           images whose k-NN vote over the seen classes' items (``seen``, labelled by their
                           ``family_key``) names the image's own family: whether a class never seen lands among
                           its seen relatives (a new dog breed among the dogs)
    data: <dataset spec>
    label_key: label, train_fraction: 0.5, knn: as for imagenet
    seen: <dataset spec> (optional), family_key: family
  name: few_label       -> {"top1_<p>pct" per fraction}: a class-mean probe (xsample.eval.probe) on a seeded
                           class-balanced fraction of the train split's labels (at least one per class),
                           standardised with the whole split's features (unlabelled), scored on the test split;
                           the mean over ``draws`` seeded draws (the same labelled items for every run)
    train, test, label_key           as for imagenet
    fractions: [0.01, 0.1], draws: 5
  name: graph_alignment -> {"pearson"}: whether the representation's class similarities follow the text graph of
                           the class names (harness evaluation): the cosine of every pair of class-mean features
                           (L2-normalised items) of ``data``, correlated (Pearson, x 100, over the pairs of distinct
                           classes) with the cosine of the templated class names' text embeddings. It reads the
                           graph's *values*: a run trained on the same graph with its class rows permuted keeps
                           every value and class identity and loses only this agreement.
    data: <dataset spec>
    label_key: label, encoder: all-MiniLM-L6-v2, template: "a photo of a {}"

Evaluations whose ``train`` specs are equal share one probe, fitted once: that is how ImageNet-ReaL,
ImageNet-9 and ObjectNet reuse the ImageNet probe. Every dataset is encoded once per call, whatever the
number of evaluations using it. ``probe_config`` holds the arguments of ``fit_linear_probe``: epochs,
learning_rates, batch_size and optionally val_fraction, weight_decay, momentum. All specs are validated before
any work; a bad one raises ValueError naming the field (e.g. ``evaluations[2] (imagenet9).variants.only_fg``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from xsample.data.subsets import class_balanced_positions
from xsample.eval.features import already_applied, batched_eval_views, encode_dataset, prepared_items
from xsample.eval.knn import knn_predict
from xsample.eval.metrics import (
    IMAGENET9_GAP_VARIANTS,
    imagenet9_metrics,
    mapped_predictions,
    real_top1_accuracy,
    top1_accuracy,
)
from xsample.eval.probe import LinearProbe, fit_class_mean_probe, fit_linear_probe
from xsample.graph.encoders import DEFAULT_ENCODER, class_caption_embeddings, load_text_encoder

log = logging.getLogger(__name__)

PROBE_CONFIG_REQUIRED = ("epochs", "learning_rates", "batch_size")
PROBE_CONFIG_OPTIONAL = ("val_fraction", "weight_decay", "momentum")
# Dataset attributes that name the classes of an item field: they fix the probe's class count.
_CLASS_NAME_ATTRIBUTES = {"label": "class_names", "attribute": "attribute_names"}
CLASS_MAP_FROM_DATASET = "from_dataset"
_REQUIRED = object()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    split: str
    root: str | None
    options_json: str  # canonical JSON of the options: keeps the spec hashable (feature cache key)

    def describe(self) -> str:
        return f"{self.name}/{self.split}"

    def build(self, builder: Callable[..., Dataset], data_roots: Mapping[str, Any]) -> Dataset:
        root = self.root if self.root is not None else data_roots.get(self.name)
        return builder(self.name, self.split, root=root, **json.loads(self.options_json))


class _Fields:
    """Reads one mapping of a spec, remembering which fields were used so unknown ones can be reported."""

    def __init__(self, raw: Any, where: str):
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where} must be a mapping, got {type(raw).__name__}: {raw!r}")
        self.raw, self.where, self.used = raw, where, set()

    def value(self, field: str, default: Any = _REQUIRED) -> Any:
        self.used.add(field)
        if self.raw.get(field) is None:
            if default is _REQUIRED:
                raise ValueError(f"{self.where}.{field} is missing; add it to the evaluation spec")
            return default
        return self.raw[field]

    def text(self, field: str, default: Any = _REQUIRED) -> str:
        value = self.value(field, default)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{self.where}.{field} must be a non-empty string, got {value!r}")
        return value

    def flag(self, field: str, default: bool) -> bool:
        value = self.value(field, default)
        if not isinstance(value, bool):
            raise ValueError(f"{self.where}.{field} must be true or false, got {value!r}")
        return value

    def number(self, field: str, default: float, *, low: float, high: float) -> float:
        value = self.value(field, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
            raise ValueError(f"{self.where}.{field} must be a number in ({low}, {high}), got {value!r}")
        return float(value)

    def dataset(self, field: str) -> DatasetSpec:
        return _dataset_spec(self.value(field), f"{self.where}.{field}")

    def knn(self, field: str) -> dict[str, float] | None:
        """Weighted k-NN settings ({k, temperature}); false or null switch k-NN off."""
        self.used.add(field)
        raw = self.raw.get(field, {})
        if raw is None or raw is False:
            return None
        knn_fields = _Fields(raw, f"{self.where}.{field}")
        k = knn_fields.value("k", 20)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{self.where}.{field}.k must be a positive integer, got {k!r}")
        settings = {"k": k, "temperature": knn_fields.number("temperature", 0.07, low=0.0, high=float("inf"))}
        knn_fields.finish()
        return settings

    def fractions(self, field: str, default: list[float]) -> tuple[float, ...]:
        value = self.value(field, default)
        if (not isinstance(value, Sequence) or isinstance(value, str) or not value
                or any(isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1 for v in value)
                or len(set(value)) != len(value)):
            raise ValueError(f"{self.where}.{field} must be a list of distinct fractions in (0, 1), got {value!r}")
        return tuple(float(v) for v in value)

    def count(self, field: str, default: int) -> int:
        value = self.value(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{self.where}.{field} must be a positive integer, got {value!r}")
        return value

    def class_map(self, field: str) -> tuple[int, ...] | str | None:
        value = self.value(field, None)
        if value is None or value == CLASS_MAP_FROM_DATASET:
            return value
        if (not isinstance(value, Sequence) or isinstance(value, str) or not value
                or any(isinstance(v, bool) or not isinstance(v, int) or v < -1 for v in value)):
            raise ValueError(f"{self.where}.{field} must be null, {CLASS_MAP_FROM_DATASET!r} or a list with one "
                             "target class (int >= 0, or -1 for none) per probe class")
        return tuple(value)

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ValueError(f"{self.where}: unknown field(s) {unknown}; allowed: {sorted(self.used)}")


def _dataset_spec(raw: Any, where: str) -> DatasetSpec:
    fields = _Fields(raw, where)
    name, split = fields.text("name"), fields.text("split")
    root = fields.value("root", None)
    if root is not None and not isinstance(root, str):
        raise ValueError(f"{where}.root must be a path string or null, got {root!r}")
    options = fields.value("options", {})
    if not isinstance(options, Mapping):
        raise ValueError(f"{where}.options must be a mapping, got {options!r}")
    fields.finish()
    try:
        options_json = json.dumps(dict(options), sort_keys=True)
    except TypeError as error:
        raise ValueError(f"{where}.options must hold plain values (numbers, strings, lists, mappings): {error}") from None
    return DatasetSpec(name=name, split=split, root=root, options_json=options_json)


class _Session:
    """Per-call caches: features per dataset spec, probes per (train spec, label field)."""

    def __init__(self, encoder: nn.Module, *, transform: Callable, device: torch.device, batch_size: int,
                 num_workers: int, builder: Callable[..., Dataset], data_roots: Mapping[str, Any],
                 probe_config: dict[str, Any], seed: int, needed_fields: dict[DatasetSpec, set[str]],
                 image_size: int | None = None, autocast: Callable[[], Any] | None = None):
        self.encoder, self.transform, self.device = encoder, transform, device
        self.image_size, self.autocast = image_size, autocast
        self.skipped: dict[DatasetSpec, int] = {}  # unreadable images left out of each dataset's features
        self.batch_size, self.num_workers = batch_size, num_workers
        self.builder, self.data_roots = builder, data_roots
        self.probe_config, self.seed, self.needed_fields = probe_config, seed, needed_fields
        self._features: dict[DatasetSpec, tuple[torch.Tensor, dict[str, Any]]] = {}
        self._class_names: dict[tuple[DatasetSpec, str], tuple[str, ...]] = {}
        self._probes: dict[tuple[DatasetSpec, str], LinearProbe] = {}
        self._dataset_class_maps: dict[DatasetSpec, tuple[int, ...]] = {}
        self._imagenet_indices: dict[DatasetSpec, tuple[int, ...]] = {}

    def features(self, spec: DatasetSpec) -> tuple[torch.Tensor, dict[str, Any]]:
        if spec not in self._features:
            dataset = spec.build(self.builder, self.data_roots)
            started = time.perf_counter()
            inputs, transform = dataset, batched_eval_views(dataset, self.image_size, self.device)
            if transform is None:
                transform = self.transform
                prepared = (None if self.image_size is None else
                            prepared_items((spec, repr(transform)), dataset, transform, self.image_size))
                if prepared is not None:
                    inputs, transform = prepared, already_applied
            features, fields, self.skipped[spec] = encode_dataset(
                self.encoder, inputs, transform, batch_size=self.batch_size, device=self.device,
                num_workers=self.num_workers, extra_keys=sorted(self.needed_fields[spec]), autocast=self.autocast)
            self._features[spec] = (features, fields)
            log.info("encoded %s: %d items in %.1f s", spec.describe(), len(dataset), time.perf_counter() - started)
            if getattr(dataset, "imagenet_class_map", None) is not None:
                self._dataset_class_maps[spec] = tuple(int(v) for v in dataset.imagenet_class_map)
            if getattr(dataset, "imagenet_indices", None) is not None:
                self._imagenet_indices[spec] = tuple(int(v) for v in dataset.imagenet_indices)
            for field, attribute in _CLASS_NAME_ATTRIBUTES.items():
                names = getattr(dataset, attribute, None)
                if names:
                    self._class_names[(spec, field)] = tuple(str(name) for name in names)
        return self._features[spec]

    def labels(self, spec: DatasetSpec, field: str) -> torch.Tensor:
        values = self.features(spec)[1][field]
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"field {field!r} of {spec.describe()} must be one int per item (a class index)")
        return values

    def class_map(self, declared: tuple[int, ...] | str | None, test: DatasetSpec,
                  train: DatasetSpec) -> tuple[int, ...] | None:
        """The probe-to-test class map: as declared, or the test dataset's own ``imagenet_class_map`` (over the
        1000 ImageNet classes), read through the train set's ``imagenet_indices`` when it holds a subset of them."""
        if declared != CLASS_MAP_FROM_DATASET:
            return declared
        self.features(test)
        if test not in self._dataset_class_maps:
            raise ValueError(f"class_map: {CLASS_MAP_FROM_DATASET} needs {test.describe()} to provide imagenet_class_map")
        full_map = self._dataset_class_maps[test]
        self.features(train)
        indices = self._imagenet_indices.get(train)
        if indices is None or list(indices) == list(range(len(full_map))):
            return full_map
        return tuple(full_map[i] if 0 <= i < len(full_map) else -1 for i in indices)

    def class_names(self, spec: DatasetSpec, field: str) -> tuple[str, ...] | None:
        """The classes the dataset names for ``field``, or None when it names none."""
        self.features(spec)
        return self._class_names.get((spec, field))

    def class_count(self, spec: DatasetSpec, field: str) -> int | None:
        """Number of classes the dataset names for ``field``; None: the probe infers it from the labels."""
        names = self.class_names(spec, field)
        return None if names is None else len(names)

    def probe(self, spec: DatasetSpec, field: str) -> LinearProbe:
        if (spec, field) not in self._probes:
            features = self.features(spec)[0]
            self._probes[(spec, field)] = self.fit_probe(features, self.labels(spec, field),
                                                         self.class_count(spec, field))
        return self._probes[(spec, field)]

    def fit_probe(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> LinearProbe:
        started = time.perf_counter()
        probe = fit_linear_probe(features, labels, **self.probe_config, num_classes=num_classes, seed=self.seed,
                                 device=self.device)
        log.info("linear probe on %d x %d features: lr %g (held-out top-1 %s) in %.1f s", len(features),
                 features.shape[1], probe.learning_rate, probe.val_top1, time.perf_counter() - started)
        grid = sorted(probe.val_top1)
        if len(grid) > 2 and len(set(probe.val_top1.values())) > 1 and probe.learning_rate in (grid[0], grid[-1]):
            log.warning("the best probe lr %g is at the edge of learning_rates %s: consider extending the grid",
                        probe.learning_rate, grid)
        return probe


@dataclass(frozen=True)
class ScoredProbe:
    """The probe an ``imagenet`` evaluation scored its test set with, and the names of its classes."""
    probe: LinearProbe
    class_names: tuple[str, ...] | None
    train: DatasetSpec


def _probe_details(probe: LinearProbe) -> dict[str, Any]:
    return {"learning_rate": probe.learning_rate, "val_top1": {str(lr): acc for lr, acc in probe.val_top1.items()},
            "fit_size": probe.fit_size, "val_size": probe.val_size}


def _class_map_tensor(class_map: tuple[int, ...] | None, probe: LinearProbe) -> torch.Tensor:
    return torch.arange(probe.num_classes) if class_map is None else torch.tensor(class_map)


@dataclass(frozen=True)
class _ImageNet:
    train: DatasetSpec
    test: DatasetSpec
    label_key: str
    knn: dict[str, float] | None

    @classmethod
    def parse(cls, fields: _Fields) -> _ImageNet:
        return cls(fields.dataset("train"), fields.dataset("test"), fields.text("label_key", "label"), fields.knn("knn"))

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        return [(self.train, self.label_key), (self.test, self.label_key)]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        probe = session.probe(self.train, self.label_key)
        test_features = session.features(self.test)[0]
        test_labels = session.labels(self.test, self.label_key)
        metrics = {"top1": top1_accuracy(probe.predict(test_features), test_labels)}
        if self.knn is not None:
            predictions = knn_predict(session.features(self.train)[0], session.labels(self.train, self.label_key),
                                      test_features, k=int(self.knn["k"]), temperature=self.knn["temperature"],
                                      num_classes=probe.num_classes, device=session.device)
            metrics["knn_top1"] = top1_accuracy(predictions, test_labels)
        return metrics, {"probe": _probe_details(probe), "test_size": len(test_features), "knn": self.knn}


@dataclass(frozen=True)
class _ImageNetReaL:
    train: DatasetSpec
    test: DatasetSpec
    label_key: str
    real_labels_key: str

    @classmethod
    def parse(cls, fields: _Fields) -> _ImageNetReaL:
        return cls(fields.dataset("train"), fields.dataset("test"), fields.text("label_key", "label"),
                   fields.text("real_labels_key", "real_labels"))

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        return [(self.train, self.label_key), (self.test, self.real_labels_key)]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        probe = session.probe(self.train, self.label_key)
        test_features, extras = session.features(self.test)
        label_lists = extras[self.real_labels_key]
        if isinstance(label_lists, torch.Tensor):
            raise ValueError(f"field {self.real_labels_key!r} of {self.test.describe()} must be a list of classes per item")
        scored = sum(1 for labels in label_lists if len(labels))
        return ({"top1": real_top1_accuracy(probe.predict(test_features), label_lists)},
                {"probe": _probe_details(probe), "test_size": len(label_lists), "scored": scored})


@dataclass(frozen=True)
class _ImageNet9:
    train: DatasetSpec
    variants: tuple[tuple[str, DatasetSpec], ...]
    label_key: str
    class_map: tuple[int, ...] | str | None
    restrict_predictions: bool

    @classmethod
    def parse(cls, fields: _Fields) -> _ImageNet9:
        variants_fields = _Fields(fields.value("variants"), f"{fields.where}.variants")
        missing = [name for name in IMAGENET9_GAP_VARIANTS if name not in variants_fields.raw]
        if missing:
            raise ValueError(f"{fields.where}.variants must include {list(IMAGENET9_GAP_VARIANTS)} (for bg_gap); "
                             f"missing {missing}")
        variants = tuple((str(name), variants_fields.dataset(name)) for name in variants_fields.raw)
        if "bg_gap" in dict(variants):
            raise ValueError(f"{fields.where}.variants.bg_gap: the name is reserved for the computed gap")
        return cls(fields.dataset("train"), variants, fields.text("label_key", "label"), fields.class_map("class_map"),
                   fields.flag("restrict_predictions", True))

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        return [(self.train, self.label_key)] + [(spec, self.label_key) for _, spec in self.variants]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        probe = session.probe(self.train, self.label_key)
        class_map = _class_map_tensor(session.class_map(self.class_map, self.variants[0][1], self.train), probe)
        accuracies, sizes = {}, {}
        for name, spec in self.variants:
            features = session.features(spec)[0]
            predictions = mapped_predictions(probe.logits(features), class_map, restrict=self.restrict_predictions)
            accuracies[name] = top1_accuracy(predictions, session.labels(spec, self.label_key))
            sizes[name] = len(features)
        return imagenet9_metrics(accuracies), {"probe": _probe_details(probe), "test_sizes": sizes,
                                               "restrict_predictions": self.restrict_predictions}


@dataclass(frozen=True)
class _ObjectNet:
    train: DatasetSpec
    test: DatasetSpec
    label_key: str
    class_map: tuple[int, ...] | str | None
    restrict_predictions: bool

    @classmethod
    def parse(cls, fields: _Fields) -> _ObjectNet:
        return cls(fields.dataset("train"), fields.dataset("test"), fields.text("label_key", "label"),
                   fields.class_map("class_map"), fields.flag("restrict_predictions", True))

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        return [(self.train, self.label_key), (self.test, self.label_key)]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        probe = session.probe(self.train, self.label_key)
        features = session.features(self.test)[0]
        class_map = _class_map_tensor(session.class_map(self.class_map, self.test, self.train), probe)
        predictions = mapped_predictions(probe.logits(features), class_map, restrict=self.restrict_predictions)
        return ({"top1": top1_accuracy(predictions, session.labels(self.test, self.label_key))},
                {"probe": _probe_details(probe), "test_size": len(features),
                 "restrict_predictions": self.restrict_predictions})


@dataclass(frozen=True)
class _MITStates:
    data: DatasetSpec
    object_key: str
    attribute_key: str
    train_fraction: float

    @classmethod
    def parse(cls, fields: _Fields) -> _MITStates:
        return cls(fields.dataset("data"), fields.text("object_key", "label"), fields.text("attribute_key", "attribute"),
                   fields.number("train_fraction", 0.5, low=0.0, high=1.0))

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        return [(self.data, self.object_key), (self.data, self.attribute_key)]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        features = session.features(self.data)[0]
        train_rows, test_rows = _seeded_halves(len(features), self.train_fraction, session.seed, "mit_states")
        metrics, details = {}, {"train_size": len(train_rows), "test_size": len(test_rows)}
        for metric, field in (("objects", self.object_key), ("attributes", self.attribute_key)):
            labels = session.labels(self.data, field)
            probe = session.fit_probe(features[train_rows], labels[train_rows],
                                      session.class_count(self.data, field))
            metrics[metric] = top1_accuracy(probe.predict(features[test_rows]), labels[test_rows])
            details[f"{metric}_probe"] = _probe_details(probe)
        return metrics, details


def _seeded_halves(count: int, train_fraction: float, seed: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fitting rows, scored rows): a seeded random split of ``count`` items."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    train_size = int(count * train_fraction)
    if not 0 < train_size < count:
        raise ValueError(f"{name}: train_fraction={train_fraction} of {count} items leaves an empty half")
    return order[:train_size], order[train_size:]


@dataclass(frozen=True)
class _HeldOutClasses:
    data: DatasetSpec
    label_key: str
    train_fraction: float
    knn: dict[str, float] | None
    seen: DatasetSpec | None
    family_key: str

    @classmethod
    def parse(cls, fields: _Fields) -> _HeldOutClasses:
        seen = fields.dataset("seen") if fields.value("seen", None) is not None else None
        parsed = cls(fields.dataset("data"), fields.text("label_key", "label"),
                     fields.number("train_fraction", 0.5, low=0.0, high=1.0), fields.knn("knn"), seen,
                     fields.text("family_key", "family"))
        if seen is not None and parsed.knn is None:
            raise ValueError(f"{fields.where}: family_knn_top1 (seen) is a k-NN vote; give knn settings")
        return parsed

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        families = [(self.data, self.family_key), (self.seen, self.family_key)] if self.seen is not None else []
        return [(self.data, self.label_key), *families]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        features = session.features(self.data)[0]
        labels = session.labels(self.data, self.label_key)
        train_rows, test_rows = _seeded_halves(len(features), self.train_fraction, session.seed, "heldout_classes")
        classes = session.class_count(self.data, self.label_key)
        probe = session.fit_probe(features[train_rows], labels[train_rows], classes)
        metrics = {"top1": top1_accuracy(probe.predict(features[test_rows]), labels[test_rows])}
        if self.knn is not None:
            predictions = knn_predict(features[train_rows], labels[train_rows], features[test_rows],
                                      k=int(self.knn["k"]), temperature=self.knn["temperature"],
                                      num_classes=probe.num_classes, device=session.device)
            metrics["knn_top1"] = top1_accuracy(predictions, labels[test_rows])
        details = {"probe": _probe_details(probe), "train_size": len(train_rows), "test_size": len(test_rows),
                   "knn": self.knn}
        if self.seen is not None:
            # Every held-out image is scored (no half is needed: nothing is fitted on the held-out classes).
            families, seen_families = session.labels(self.data, self.family_key), session.labels(self.seen, self.family_key)
            votes = knn_predict(session.features(self.seen)[0], seen_families, features, k=int(self.knn["k"]),
                                temperature=self.knn["temperature"],
                                num_classes=int(max(families.max(), seen_families.max())) + 1, device=session.device)
            metrics["family_knn_top1"] = top1_accuracy(votes, families)
            details["family_scored"] = len(features)
        return metrics, details


def few_label_metric(fraction: float) -> str:
    """The metrics key of one label fraction: 0.01 -> "top1_1pct"."""
    return f"top1_{fraction * 100:g}pct"


@dataclass(frozen=True)
class _FewLabel:
    train: DatasetSpec
    test: DatasetSpec
    label_key: str
    fractions: tuple[float, ...]
    draws: int

    @classmethod
    def parse(cls, fields: _Fields) -> _FewLabel:
        return cls(fields.dataset("train"), fields.dataset("test"), fields.text("label_key", "label"),
                   fields.fractions("fractions", [0.01, 0.1]), fields.count("draws", 5))

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        return [(self.train, self.label_key), (self.test, self.label_key)]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        train_features = session.features(self.train)[0]
        train_labels = session.labels(self.train, self.label_key)
        test_features = session.features(self.test)[0]
        test_labels = session.labels(self.test, self.label_key)
        classes = session.class_count(self.train, self.label_key) or int(train_labels.max()) + 1
        metrics, labelled = {}, {}
        for fraction in self.fractions:
            accuracies = []
            for draw in range(self.draws):
                # Draws seeded by their number only: every run is probed with the same labelled items.
                rows = torch.tensor(class_balanced_positions(train_labels.numpy(), fraction, seed=draw))
                probe = fit_class_mean_probe(train_features[rows], train_labels[rows], num_classes=classes,
                                             reference=train_features)
                accuracies.append(top1_accuracy(probe.predict(test_features), test_labels))
            metrics[few_label_metric(fraction)] = sum(accuracies) / len(accuracies)
            labelled[few_label_metric(fraction)] = len(rows)
        return metrics, {"labelled_items_per_draw": labelled, "draws": self.draws, "test_size": len(test_features)}


@dataclass(frozen=True)
class _GraphAlignment:
    data: DatasetSpec
    label_key: str
    encoder: str
    template: str

    @classmethod
    def parse(cls, fields: _Fields) -> _GraphAlignment:
        return cls(fields.dataset("data"), fields.text("label_key", "label"), fields.text("encoder", DEFAULT_ENCODER),
                   fields.text("template", "a photo of a {}"))

    def needs(self) -> list[tuple[DatasetSpec, str]]:
        return [(self.data, self.label_key)]

    def run(self, session: _Session) -> tuple[dict[str, float], dict[str, Any]]:
        features = nn.functional.normalize(session.features(self.data)[0], dim=1)
        labels = session.labels(self.data, self.label_key)
        names = session.class_names(self.data, self.label_key)
        if names is None:
            raise ValueError(f"graph_alignment: {self.data.describe()} names no classes for {self.label_key!r}")
        present = [label for label in range(len(names)) if bool((labels == label).any())]
        if len(present) < 3:
            raise ValueError(f"graph_alignment: {self.data.describe()} holds {len(present)} classes; "
                             "a correlation over class pairs needs at least 3")
        means = nn.functional.normalize(torch.stack([features[labels == label].mean(0) for label in present]), dim=1)
        text = class_caption_embeddings([names[label] for label in present], load_text_encoder(self.encoder),
                                        self.template)
        pairs = ~torch.eye(len(present), dtype=torch.bool)
        learned, graph = (means @ means.T)[pairs], (text @ text.T)[pairs]
        pearson = float(torch.corrcoef(torch.stack([learned, graph]))[0, 1])
        return {"pearson": 100.0 * pearson}, {"classes": len(present), "encoder": self.encoder,
                                              "template": self.template}


PROTOCOLS: dict[str, type] = {
    "imagenet": _ImageNet, "imagenet_real": _ImageNetReaL, "imagenet9": _ImageNet9, "objectnet": _ObjectNet,
    "mit_states": _MITStates, "heldout_classes": _HeldOutClasses, "few_label": _FewLabel,
    "graph_alignment": _GraphAlignment,
}


def _parse_evaluations(evaluations: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    if isinstance(evaluations, Mapping | str) or not isinstance(evaluations, Sequence):
        raise ValueError("evaluations must be a list of evaluation specs (mappings with a 'name')")
    parsed, seen = [], set()
    for position, raw in enumerate(evaluations):
        where = f"evaluations[{position}]"
        fields = _Fields(raw, where)
        name = fields.text("name")
        if name not in PROTOCOLS:
            raise ValueError(f"{where}.name: unknown evaluation {name!r}; choose one of {', '.join(PROTOCOLS)}")
        if name in seen:
            raise ValueError(f"{where}.name: evaluation {name!r} appears twice; each metrics key must be unique")
        seen.add(name)
        fields.where = f"{where} ({name})"
        evaluation = PROTOCOLS[name].parse(fields)
        fields.finish()
        parsed.append((name, evaluation))
    return parsed


def _checked_probe_config(probe_config: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(probe_config, Mapping):
        raise ValueError(f"probe_config must be a mapping, got {type(probe_config).__name__}")
    missing = [key for key in PROBE_CONFIG_REQUIRED if key not in probe_config]
    unknown = sorted(set(probe_config) - set(PROBE_CONFIG_REQUIRED) - set(PROBE_CONFIG_OPTIONAL))
    if missing or unknown:
        raise ValueError(f"probe_config: missing {missing}, unknown {unknown}; fields are "
                         f"{list(PROBE_CONFIG_REQUIRED)} and optionally {list(PROBE_CONFIG_OPTIONAL)}")
    checked = dict(probe_config)
    checked["epochs"], checked["batch_size"] = int(checked["epochs"]), int(checked["batch_size"])
    checked["learning_rates"] = [float(lr) for lr in checked["learning_rates"]]
    return checked


def validate_evaluations(evaluations: Sequence[Mapping[str, Any]], probe_config: Mapping[str, Any] | None = None) -> None:
    """Raise ValueError naming the first bad field; does no work (use it when a config is built)."""
    _parse_evaluations(evaluations)
    if probe_config is not None:
        _checked_probe_config(probe_config)


def run_evaluations(
    encoder: nn.Module,
    evaluations: Sequence[Mapping[str, Any]],
    *,
    device: str | torch.device,
    probe_config: Mapping[str, Any],
    image_size: int | None = None,
    transform: Callable | None = None,
    data_roots: Mapping[str, Any] | None = None,
    dataset_builder: Callable[..., Dataset] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
    autocast: Callable[[], Any] | None = None,
    scored_probes: dict[str, ScoredProbe] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Run every evaluation spec with the frozen ``encoder`` (images -> [B, D] features).

    Returns ``(metrics, details)``: ``metrics[eval name][metric]`` in percent, exactly the result.json
    contract; ``details[eval name]`` holds the chosen probe learning rate, held-out accuracies and sizes, and
    ``images_skipped`` (unreadable images left out, per dataset read). ``transform`` defaults to
    ``xsample.views.pil.eval_transform(image_size)`` (on a GPU, image-file datasets take the batched decode path
    instead) and ``dataset_builder`` to ``xsample.data.build_dataset``; ``autocast()`` wraps the encoder.
    ``scored_probes``, when given, receives the probe of every ``imagenet`` evaluation under its name (a run
    keeps it: the exported classifier).
    """
    parsed = _parse_evaluations(evaluations)
    checked_probe_config = _checked_probe_config(probe_config)
    if transform is None:
        if image_size is None:
            raise ValueError("run_evaluations needs image_size (for the standard eval transform) or a transform")
        from xsample.views.pil import eval_transform

        transform = eval_transform(int(image_size))
    if dataset_builder is None:
        from xsample.data import build_dataset

        dataset_builder = build_dataset
    needed_fields: dict[DatasetSpec, set[str]] = {}
    for _, evaluation in parsed:
        for spec, field in evaluation.needs():
            needed_fields.setdefault(spec, set()).add(field)
    session = _Session(encoder, transform=transform, device=torch.device(device), batch_size=batch_size,
                       num_workers=num_workers, builder=dataset_builder, data_roots=dict(data_roots or {}),
                       probe_config=checked_probe_config, seed=seed, needed_fields=needed_fields,
                       image_size=image_size, autocast=autocast)
    metrics, details = {}, {}
    for name, evaluation in parsed:
        started = time.perf_counter()
        metrics[name], details[name] = evaluation.run(session)
        details[name]["seconds"] = round(time.perf_counter() - started, 3)
        details[name]["images_skipped"] = {spec.describe(): session.skipped[spec]
                                           for spec, _ in evaluation.needs() if session.skipped.get(spec)}
        log.info("%s: %s", name, metrics[name])
        if scored_probes is not None and isinstance(evaluation, _ImageNet):
            scored_probes[name] = ScoredProbe(session.probe(evaluation.train, evaluation.label_key),
                                              session.class_names(evaluation.train, evaluation.label_key),
                                              evaluation.train)
    return metrics, details
