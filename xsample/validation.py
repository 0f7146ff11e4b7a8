"""Checks on a run config that must pass before anything runs or is written.

A NaN temperature would otherwise surface only when result.json is written ("Out of range float
values are not JSON compliant"), and ``int(1.5)`` would silently run seed 1.
"""

from __future__ import annotations

import math
from typing import Any


class InvalidConfigError(ValueError):
    """A config value the harness refuses; the message names the key and the fix."""


def non_finite_values(config: Any, prefix: str = "") -> dict[str, float]:
    """Every NaN or infinite number in a nested config, by dotted key."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list | tuple):
        items = enumerate(config)
    else:
        return {prefix: config} if isinstance(config, float) and not math.isfinite(config) else {}
    found: dict[str, float] = {}
    for name, value in items:
        found.update(non_finite_values(value, f"{prefix}.{name}" if prefix else str(name)))
    return found


def non_finite_problem(key: str, value: float) -> str:
    return f"{key}={value} is not a finite number; give a finite value"


def integer_seed(value: Any, key: str = "seed") -> int:
    """``value`` as a seed; anything but an integer (1.5, "1", true) is refused rather than truncated."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfigError(f"{key} must be an integer, got {value!r}; e.g. {key}=1")
    return value


def check_run_config(config: dict[str, Any]) -> None:
    """Refuse non-finite numbers anywhere and a non-integer seed."""
    bad = non_finite_values(config)
    if bad:
        (first, value), *others = bad.items()
        raise InvalidConfigError(non_finite_problem(first, value)
                                 + (f" (also non-finite: {', '.join(key for key, _ in others)})" if others else ""))
    if "seed" in config:
        integer_seed(config["seed"])
