"""What a run needs from the machine, checked before it starts: dataset roots and text encoders.

Training and every evaluation are covered, so that a missing ImageNet-9 root is reported before the
hours of pretraining it would otherwise interrupt, and a whole sweep is checked before submission.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from xsample.config import RunConfig, TextGraph
from xsample.data.registry import root_problem
from xsample.graph.encoders import encoder_unavailable


def _dataset_specs(node: Any) -> Iterator[dict[str, Any]]:
    """Every dataset spec ({"name", "split", ...}) inside an evaluation's settings."""
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and "split" in node:
            yield node
        for value in node.values():
            yield from _dataset_specs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dataset_specs(value)


def input_problems(config: RunConfig) -> list[str]:
    """One line per missing input of the run ``config`` (empty when it can start).

    A dataset reads a root when the config has a ``paths.<name>`` entry for it, the same entry the
    run passes to its loader."""
    roots = config.paths.data_roots()
    needed: dict[str, Any] = {}
    if config.data.name in roots:
        needed[config.data.name] = config.data.root
    for evaluation in config.eval.evaluations:
        for spec in _dataset_specs(evaluation.settings):
            if spec["name"] in roots:
                needed.setdefault(spec["name"], spec.get("root") or roots[spec["name"]])
    problems = [problem for name, root in needed.items() if (problem := root_problem(name, root)) is not None]
    if isinstance(config.graph, TextGraph):
        problem = encoder_unavailable(config.graph.encoder)
        if problem is not None:
            problems.append(problem)
    return problems
