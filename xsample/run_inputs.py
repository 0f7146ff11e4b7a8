"""What a run needs from the machine, checked before it starts: dataset roots and text encoders.

Training and every evaluation are covered, so that a missing ImageNet-9 root is reported before the
hours of pretraining it would otherwise interrupt, and a whole sweep is checked before submission.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def input_problems(config: dict[str, Any]) -> list[str]:
    """One line per missing input of the run ``config`` (empty when it can start).

    A dataset reads a root when the config has a ``paths.<name>`` entry for it, the same entry the
    run passes to its loader."""
    roots = {key: value for key, value in (config.get("paths") or {}).items() if key != "cache"}
    needed: dict[str, Any] = {}
    data = config.get("data") or {}
    if data.get("name") in roots:
        needed[data["name"]] = data.get("root")
    for evaluation in (config.get("eval") or {}).get("evaluations") or []:
        for spec in _dataset_specs({key: value for key, value in evaluation.items() if key != "name"}):
            if spec["name"] in roots:
                needed.setdefault(spec["name"], spec.get("root") or roots[spec["name"]])
    problems = [problem for name, root in needed.items() if (problem := root_problem(name, root)) is not None]
    graph = config.get("graph")
    if isinstance(graph, dict) and graph.get("source") != "random":
        problem = encoder_unavailable(graph.get("encoder"))
        if problem is not None:
            problems.append(problem)
    return problems
