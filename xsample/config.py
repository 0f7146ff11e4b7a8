"""The run config, typed: what a planned job executes (``runs/<name>/config.json``), parsed once at the
library's entry and read as attributes below it. Torch-free, so planners and reports can parse it too.

Every key is required: the defaults live in ``configs/`` only, and the planner (experiments/run_config.py)
writes each run's resolved values. A key that is missing, unknown, or of the wrong type is refused with one
line naming the dotted key (``RunConfigError``). ``RunConfig.to_dict()`` gives back exactly the mapping it
was parsed from, which the run's identity (config hash, variant) and result.json record.

Some sections take one of several shapes, chosen by a key inside them: ``method`` by what its registry entry
trains (xsample.methods), ``graph`` by its source, ``optim`` by the optimiser. ``compute`` and
``graph_stats`` are present exactly in the runs of those tasks. The evaluation specs are the spec language of
xsample.eval.protocols (which owns their fields and checks them where the run starts).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from xsample.methods import UnknownMethodError
from xsample.methods import method as registered_method
from xsample.validation import MAX_SEED, PRECISIONS, non_finite_values

TASKS = ("pretrain", "graph_stats", "compute")
# Known-answer runs (xsample/train/sanity.py), part of the run identity.
SANITY_CHECKS = ("none", "shuffled_labels", "misaligned_graph", "permuted_graph")
GRAPH_SOURCES = ("class_names", "captions", "random")
RANDOM_GRANULARITIES = ("sample", "class")  # the random graph's vectors: one per sample, or one per class
AUGMENT_PATHS = ("auto", "batched", "pil")  # runtime.augment; auto = batched
BUDGETS = ("epochs", "steps")  # what optim.epochs counts: passes over the run's data, or the whole set's steps
LR_SCALINGS = ("linear", "none")  # linear: lr x global batch / 256
# How to get a config.json this version reads: plan the run again.
REPLAN = ("this config.json was planned by another version of xsample (or edited by hand); plan the run again "
          "with the command that planned it (python experiments/reproduce.py -m table=...)")


class RunConfigError(ValueError):
    """A run config this version cannot run: the message names the dotted key, the problem and the fix."""

    def __init__(self, key: str, problem: str, fix: str = REPLAN):
        super().__init__(f"run config key {key} {problem}: {fix}")
        self.key, self.problem, self.fix = key, problem, fix


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(value) for value in typing.get_args(hint))
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(arm) for arm in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _parse(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` (dataclass, Literal, union, tuple[X, ...], dict[str, X], int,
    float, bool, str, Any); containers come back as tuples and fresh dicts."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:  # a free-form value (dataset options, an evaluation's fields): plain JSON values
        bad = non_finite_values(value)
        if bad:
            inner, number = next(iter(bad.items()))
            raise RunConfigError(f"{key}.{inner}" if inner else key, f"is {number}, not a finite number",
                                 "give a finite value")
        return copy.deepcopy(value)
    if hint is type(None):
        if value is not None:
            raise RunConfigError(key, f"is {value!r}, not null")
        return None
    if dataclasses.is_dataclass(hint):
        return _parse_section(hint, value, key)
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        raise RunConfigError(key, f"is {value!r}, not one of {', '.join(map(repr, args))}")
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (arm for arm in args if arm is not type(None)):
            try:
                return _parse(arm, value, key)
            except RunConfigError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise RunConfigError(key, f"is {value!r}, not {_type_name(hint)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise RunConfigError(key, f"is {value!r}, not {_type_name(hint)}")
        return tuple(_parse(args[0], item, f"{key}[{index}]") for index, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
            raise RunConfigError(key, f"is {value!r}, not a mapping with string keys")
        return {name: _parse(args[1], item, f"{key}.{name}") for name, item in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RunConfigError(key, f"is {value!r}, not a number")
        if not math.isfinite(value):
            raise RunConfigError(key, f"is {value}, not a finite number", "give a finite value")
        return value  # an integer stays one: to_dict() gives back what was parsed
    if hint in (int, bool, str):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise RunConfigError(key, f"is {value!r}, not {_type_name(hint)}")
        return value
    raise TypeError(f"{key}: the run config cannot parse type {hint!r}")  # a bug in this module


def _parse_section(cls: type, value: Any, key: str) -> Any:
    """A section (a dataclass) from a mapping that holds exactly its keys; a section with several shapes
    picks its class first (``shape_for``)."""
    where = key or "(top level)"
    if not isinstance(value, Mapping):
        raise RunConfigError(where, f"is {value!r}, not a mapping")
    if "shape_for" in vars(cls):
        cls = cls.shape_for(value, key)
    if "from_mapping" in vars(cls):
        return cls.from_mapping(value, key)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    prefix = f"{key}." if key else ""
    unknown = [name for name in value if name not in fields]
    if unknown:
        raise RunConfigError(f"{prefix}{unknown[0]}", f"is not a key of the run config ({where} has "
                             f"{', '.join(fields)})")
    absent = cls.ABSENT_WHEN_NONE if hasattr(cls, "ABSENT_WHEN_NONE") else ()
    missing = [name for name in fields if name not in value and name not in absent]
    if missing:
        raise RunConfigError(f"{prefix}{missing[0]}", "is missing")
    parsed = cls(**{name: _parse(hints[name], value[name], f"{prefix}{name}") if name in value else None
                    for name in fields})
    if hasattr(parsed, "check"):
        parsed.check(key)
    return parsed


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        if hasattr(value, "to_dict") and not isinstance(value, RunConfig):
            return value.to_dict()
        skip = value.ABSENT_WHEN_NONE if hasattr(value, "ABSENT_WHEN_NONE") else ()
        return {field.name: _dump(getattr(value, field.name)) for field in dataclasses.fields(value)
                if not (field.name in skip and getattr(value, field.name) is None)}
    if isinstance(value, tuple | list):
        return [_dump(item) for item in value]
    if isinstance(value, dict):
        return {name: _dump(item) for name, item in value.items()}
    return value


@dataclass(frozen=True)
class Experiment:
    """The readable labels of a run (what reports group and compare by; experiments/run_config.py)."""
    table: str
    scale: str
    method: str
    method_role: str | None
    method_targets: str | None
    layout: str
    comparability: str
    dataset: str
    dataset_used: str
    setting: str | None
    seed: int
    variant: str | None
    variant_tag: str | None


def method_settings_class(name: Any, key: str = "method") -> type[MethodSettings]:
    """The settings a method's YAML gives, by what its registry entry (xsample.methods) trains."""
    try:
        entry = registered_method(name)
    except UnknownMethodError as error:
        raise RunConfigError(f"{key}.name", f"is {name!r}, which this version does not know", str(error)) from None
    if entry.model == "pixels":
        return PixelsSettings
    if entry.batchnorm_pass:
        return BatchNormBaselineSettings
    if entry.uses_graph:
        return GraphMethodSettings
    if entry.trains and entry.targets != "captions":
        return ContrastiveSettings
    return MethodSettings


@dataclass(frozen=True)
class MethodSettings:
    """A method's settings (configs/method/<name>.yaml, less its optimiser recipe). A method with none but its
    name: CLIP (its temperature is the learnable logit scale, model.clip.init_logit_scale)."""
    name: str

    @classmethod
    def shape_for(cls, value: Mapping[str, Any], key: str) -> type[MethodSettings]:
        if "name" not in value:
            raise RunConfigError(f"{key}.name", "is missing")
        return method_settings_class(value["name"], key)


@dataclass(frozen=True)
class ContrastiveSettings(MethodSettings):
    temperature: float


@dataclass(frozen=True)
class GraphMethodSettings(ContrastiveSettings):
    """X-CLR: soft targets softmax(G / graph_temperature) from the run's graph."""
    graph_temperature: float
    mask_self: bool


@dataclass(frozen=True)
class BatchNormBaselineSettings(MethodSettings):
    """A network at initialisation whose BatchNorm statistics are recomputed on training images."""
    batchnorm_images: int
    batchnorm_batch_size: int


@dataclass(frozen=True)
class PixelsSettings(MethodSettings):
    """The probes on the pixels themselves, average-pooled to at most ``max_side`` px."""
    max_side: int


@dataclass(frozen=True)
class ColourJitter:
    """``T.ColorJitter``'s spreads (factors drawn in [1 - s, 1 + s], hue shift in [-hue, hue]), applied with
    ``probability``."""
    brightness: float
    contrast: float
    saturation: float
    hue: float
    probability: float


@dataclass(frozen=True)
class Blur:
    """A Gaussian blur with sigma drawn uniformly in ``sigma``, applied with ``probability``."""
    probability: float
    sigma: tuple[float, ...]


@dataclass(frozen=True)
class Augment:
    """The training views' recipe (configs/augment/); xsample.data.AugmentRecipe checks its ranges."""
    name: str
    colour_jitter: ColourJitter | None
    grayscale_probability: float
    blur: Blur | None
    autoaugment: str | None


@dataclass(frozen=True)
class Graph:
    """X-CLR's similarity graph (configs/graph/): its shape follows its source."""

    @classmethod
    def shape_for(cls, value: Mapping[str, Any], key: str) -> type[Graph]:
        source = value.get("source")
        if source not in GRAPH_SOURCES:
            raise RunConfigError(f"{key}.source", f"is {source!r}, not one of {', '.join(GRAPH_SOURCES)}")
        return RandomGraph if source == "random" else TextGraph


@dataclass(frozen=True)
class TextGraph(Graph):
    """The similarity of text embeddings: of templated class names, or of each sample's caption."""
    source: Literal["class_names", "captions"]
    encoder: str
    template: str


@dataclass(frozen=True)
class RandomGraph(Graph):
    """Seeded random unit vectors in place of text embeddings (Table 2's control)."""
    source: Literal["random"]
    encoder: None
    template: None
    granularity: Literal[RANDOM_GRANULARITIES]


@dataclass(frozen=True)
class Data:
    """The training set: a registered dataset (xsample.data) read with ``options``, a seeded class-balanced
    ``fraction`` of it."""
    name: str
    root: str | None
    image_size: int
    options: dict[str, Any]
    fraction: float

    def check(self, key: str) -> None:
        if not 0 < self.fraction <= 1:
            raise RunConfigError(f"{key}.fraction", f"is {self.fraction}, not in (0, 1]", "set data_fraction in (0, 1]")


@dataclass(frozen=True)
class Projector:
    hidden_dim: int
    out_dim: int
    num_layers: int


@dataclass(frozen=True)
class ClipText:
    context_length: int
    vocab_size: int
    width: int
    heads: int
    layers: int


@dataclass(frozen=True)
class Clip:
    embed_dim: int
    init_logit_scale: float
    text: ClipText


@dataclass(frozen=True)
class Model:
    backbone: str
    small_image_stem: bool
    stem_stride: int
    pretrained: bool
    projector: Projector
    clip: Clip


@dataclass(frozen=True)
class Optim:
    """The optimiser recipe (scale.optim.<recipe>) with the run's batch, epochs and budget. An optimiser
    without momentum: AdamW."""
    name: Literal["adamw"]
    lr: float
    lr_scaling: Literal[LR_SCALINGS]
    weight_decay: float
    warmup_epochs: float
    batch_size: int
    epochs: int
    budget: Literal[BUDGETS]

    @classmethod
    def shape_for(cls, value: Mapping[str, Any], key: str) -> type[Optim]:
        return MomentumOptim if value.get("name") in MomentumOptim.NAMES else Optim

    @property
    def options(self) -> dict[str, Any]:
        """The optimiser's own options (xsample.train.optim.build_optimizer) the recipe sets."""
        return {}


@dataclass(frozen=True)
class MomentumOptim(Optim):
    NAMES: ClassVar[tuple[str, ...]] = ("lars", "sgd")
    name: Literal[NAMES]
    momentum: float

    @property
    def options(self) -> dict[str, Any]:
        return {"momentum": self.momentum}


@dataclass(frozen=True)
class EvaluationSpec:
    """One evaluation in the spec language of xsample.eval.protocols: ``name`` picks the protocol and is the
    metrics key; ``settings`` are its other fields (that module documents them and checks them at the run's
    entry)."""
    name: str
    settings: dict[str, Any]

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any], key: str) -> EvaluationSpec:
        if not isinstance(value.get("name"), str):
            raise RunConfigError(f"{key}.name", f"is {value.get('name')!r}, not an evaluation name")
        settings = _parse(dict[str, Any], {name: item for name, item in value.items() if name != "name"}, key)
        return cls(value["name"], settings)

    def to_dict(self) -> dict[str, Any]:
        return {**_dump(self.settings), "name": self.name}


@dataclass(frozen=True)
class Probe:
    """The linear probe's grid (xsample.eval.probe.fit_linear_probe)."""
    epochs: int
    learning_rates: tuple[float, ...]
    batch_size: int
    val_fraction: float


@dataclass(frozen=True)
class ZeroShot:
    templates: str  # a template set of xsample.eval.zero_shot


@dataclass(frozen=True)
class Eval:
    evaluations: tuple[EvaluationSpec, ...]
    probe: Probe
    zero_shot: Literal[False] | ZeroShot  # false: no text tower, or no ImageNet (analog) test set
    not_available: tuple[str, ...]  # evaluations the table asks for that the training set has no analog of

    def evaluation_specs(self) -> list[dict[str, Any]]:
        """The specs as xsample.eval.run_evaluations takes them."""
        return [spec.to_dict() for spec in self.evaluations]


@dataclass(frozen=True)
class InitFrom:
    """The completed run whose backbone this run starts from (fine-tuning)."""
    run_dir: str
    config_hash: str


@dataclass(frozen=True)
class Wandb:
    project: str
    entity: str | None


@dataclass(frozen=True)
class Runtime:
    """Speed and placement, not results (outside the config hash)."""
    device: str
    precision: Literal[PRECISIONS]
    augment: Literal[AUGMENT_PATHS]
    num_workers: int
    log_every_steps: int
    checkpoint_every_steps: int | None     # null or 0: no checkpoint by steps
    checkpoint_every_minutes: float | None  # null or 0: no checkpoint by time
    logger: str | tuple[str, ...]
    wandb: Wandb
    distributed_timeout_s: float
    max_skipped_fraction: float


@dataclass(frozen=True)
class Paths:
    sweeps: str
    cache: str
    figures: str
    imagenet: str | None
    imagenet_real: str | None
    imagenet9: str | None
    objectnet: str | None
    mit_states: str | None
    cc3m: str | None
    cc12m: str | None
    fashion_mnist: str | None

    def data_roots(self) -> dict[str, str | None]:
        """The dataset roots by dataset name (every path but the cache; the others name no dataset)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "cache"}


@dataclass(frozen=True)
class Resources:
    """Where the job runs (SLURM), and the plan's estimate; a run asking for GPUs refuses the CPU."""
    nodes: int
    gpus_per_node: int
    tasks_per_node: int
    cpus_per_task: int
    mem_gb: int
    timeout_min: int
    est_gpu_hours: float
    requeues: int


@dataclass(frozen=True)
class ComputeOverhead:
    method: str
    against: str


@dataclass(frozen=True)
class Compute:
    """The compute table's timing (task compute): each contender's method settings on one batch."""
    method_configs: dict[str, MethodSettings]
    overhead: ComputeOverhead
    warmup_steps: int
    timed_steps: int
    methods: tuple[str, ...]
    training_ranks: int


@dataclass(frozen=True)
class GraphStats:
    """Fig. 5's histogram of graph similarities (task graph_stats)."""
    bins: int
    max_pairs: int


@dataclass(frozen=True)
class RunConfig:
    ABSENT_WHEN_NONE: ClassVar[tuple[str, ...]] = ("compute", "graph_stats")

    experiment: Experiment
    task: Literal[TASKS]
    seed: int
    sanity: Literal[SANITY_CHECKS]
    method: MethodSettings
    augment: Augment | None          # None: the run trains nothing, so it draws no training views
    graph: Graph | None   # None: the method reads no graph
    data: Data
    model: Model
    optim: Optim | None               # None: a baseline, nothing trains
    eval: Eval
    init_from: InitFrom | None
    runtime: Runtime
    paths: Paths
    resources: Resources
    compute: Compute | None = None           # present exactly in task=compute runs
    graph_stats: GraphStats | None = None    # present exactly in task=graph_stats runs

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> RunConfig:
        """Parse a run config (a planned config.json); RunConfigError names the first key that is wrong."""
        return _parse_section(cls, config, "")

    @classmethod
    def of(cls, config: RunConfig | Mapping[str, Any]) -> RunConfig:
        """``config`` parsed, unless it already is (what every library entry point does first)."""
        return config if isinstance(config, RunConfig) else cls.from_dict(config)

    def to_dict(self) -> dict[str, Any]:
        """Exactly the mapping this config was parsed from (what is hashed, saved and recorded)."""
        return _dump(self)

    def check(self, key: str) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise RunConfigError("seed", f"is {self.seed}, not in [0, {MAX_SEED}]", "set seed=0, 1, ...")
        for section in self.ABSENT_WHEN_NONE:
            if (getattr(self, section) is not None) != (self.task == section):
                raise RunConfigError(section, f"must be present exactly in task={section} runs (task={self.task})")
