"""Checks on a run config that must pass before anything runs or is written.

A NaN temperature would otherwise surface only when result.json is written ("Out of range float
values are not JSON compliant"), and ``int(1.5)`` would silently run seed 1.
"""

from __future__ import annotations

import math
import re
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


# Seeds feed torch, numpy and Python generators alike; numpy's legacy seeding stops at 2**32 - 1.
MAX_SEED = 2**31 - 1
# runtime.* choices the library understands (checked before anything runs, and again where they are used).
DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # cuda:N: one GPU, for a single process
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def integer_seed(value: Any, key: str = "seed") -> int:
    """``value`` as a seed; anything but an integer in [0, MAX_SEED] (1.5, "1", true, -1) is refused rather
    than truncated or wrapped."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfigError(f"{key} must be an integer, got {value!r}; e.g. {key}=1")
    if not 0 <= value <= MAX_SEED:
        raise InvalidConfigError(f"{key} must be in [0, {MAX_SEED}], got {value}; e.g. {key}=1")
    return value


def choice_problem(key: str, value: Any, choices: tuple[str, ...]) -> str | None:
    """The line that says ``key=value`` is not one of ``choices``, or None."""
    return None if value in choices else f"{key}={value!r} is not a choice; use one of {', '.join(choices)}"


def device_problem(value: Any) -> str | None:
    """The line that says ``runtime.device=value`` is not a device choice, or None."""
    if value in DEVICES[:-1] or (isinstance(value, str) and re.fullmatch(r"cuda:\d+", value)):
        return None
    return f"runtime.device={value!r} is not a choice; use one of {', '.join(DEVICES)}"


def runtime_problems(runtime: dict[str, Any]) -> list[str]:
    """One line per runtime.* value the library would not understand (device, precision)."""
    found = [device_problem(runtime["device"]),
             choice_problem("runtime.precision", runtime["precision"], PRECISIONS)]
    return [problem for problem in found if problem is not None]

