"""What each method is, declared once (solo-learn's METHODS dict is the model), without importing torch.

A method's *settings* (temperature, optimiser recipe, ...) live in ``configs/method/<name>.yaml``; what it *is*
lives here: what its contrastive target is built from, which model it trains, how reports compare it. Every
decision on a method in the library goes through this registry, never through a test on its name. A new
method is one YAML file plus one ``register(Method(...))``; one whose target is built from something new
also needs that target's builder in ``xsample.train.components``.

Reports do not import the registry: a run records its method's role in result.json (``experiment.method_role``),
so a report can be rendered for methods this process never registered.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a trained method's contrastive target is built from (None: the method trains nothing).
TARGETS = ("views", "labels", "graph", "captions")
# The network a method evaluates: an image encoder with a projector, CLIP's two towers, or raw pixels.
MODELS = ("contrastive", "clip", "pixels")
# How reports compare a method's rows: gains are measured against the "untrained" row; every trained row must
# clear each "baseline" and "untrained" row; a "supervised" row must beat the "label_free" method, and lose that
# advantage when its supervision is detached from the images (a sanity run).
ROLES = ("untrained", "baseline", "label_free", "supervised")


@dataclass(frozen=True)
class Method:
    name: str
    role: str
    targets: str | None
    model: str = "contrastive"
    # Zero-shot classification through the method's text tower, when the run evaluates ImageNet (or its analog).
    zero_shot: bool = False
    # BatchNorm running statistics recomputed on training images before the probes (a network at initialisation).
    batchnorm_pass: bool = False

    def __post_init__(self) -> None:
        for field, value, allowed in (("role", self.role, ROLES), ("targets", self.targets, (None, *TARGETS)),
                                      ("model", self.model, MODELS)):
            if value not in allowed:
                raise ValueError(f"method {self.name!r}: {field}={value!r}; choose one of {', '.join(map(str, allowed))}")

    @property
    def trains(self) -> bool:
        return self.targets is not None

    @property
    def views(self) -> int:
        """Image views drawn per sample: CLIP pairs one view with its caption, the others contrast two views."""
        return 1 if self.targets == "captions" else 2

    @property
    def uses_graph(self) -> bool:
        return self.targets == "graph"


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (its YAML under configs/method/ gives its settings)."""
    METHODS[method.name] = method
    return method


for _method in (
    Method("simclr", role="label_free", targets="views"),
    Method("supcon", role="supervised", targets="labels"),
    Method("xclr", role="supervised", targets="graph"),
    Method("clip", role="label_free", targets="captions", model="clip", zero_shot=True),
    Method("untrained", role="untrained", targets=None, batchnorm_pass=True),
    Method("raw_pixels", role="baseline", targets=None, model="pixels"),
):
    register(_method)


class UnknownMethodError(ValueError):
    """A method name with no registry entry."""

    @classmethod
    def for_name(cls, name: object) -> UnknownMethodError:
        return cls(f"method.name={name!r} is not a registered method; choose one of {', '.join(METHODS)} (method=NAME;"
                   f" a new method needs configs/method/{name}.yaml and an entry in xsample.methods)")


def method(name: str) -> Method:
    """The registry entry of ``name``."""
    if name not in METHODS:
        raise UnknownMethodError.for_name(name)
    return METHODS[name]


def reads_captions(name: str, graph_source: str | None) -> bool:
    """Whether a run of method ``name`` reads its samples' captions: a caption-target method (CLIP's text
    tower), or a graph method on the caption graph."""
    entry = METHODS.get(name)
    return entry is not None and (entry.targets == "captions" or (entry.uses_graph and graph_source == "captions"))


def reads_labels(name: str, graph: dict | None) -> bool:
    """Whether a run of method ``name`` reads its samples' class labels: label targets (SupCon's positives), or a
    graph method on the class-name graph or the per-class random graph."""
    entry = METHODS.get(name)
    if entry is None:
        return False
    return entry.targets == "labels" or (entry.uses_graph and graph is not None and (
        graph["source"] == "class_names" or (graph["source"] == "random" and graph["granularity"] == "class")))


def graph_label(graph: dict | None) -> str | None:
    """How reports name a run's graph: its source and what draws it, the text encoder or the random graph's
    granularity ("class_names (all-MiniLM-L6-v2)", "random (sample)"); None for a run without a graph."""
    if graph is None:
        return None
    return f"{graph['source']} ({graph['granularity'] if graph['source'] == 'random' else graph['encoder']})"
