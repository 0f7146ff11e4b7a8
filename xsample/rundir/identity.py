"""What a run is: its readable labels plus every way its resolved config departs from a reference.

A sweep names each run after its labels (method, dataset, setting, seed). Any other difference
against the reference config (the table's own grid point, composed without the extra overrides)
is the run's *variant*: recorded in its labels, shown in reports, and appended to its directory
name, so two different configs never share a directory and the same config always finds its own.
Nothing here knows particular keys: a key added to the config tree is covered automatically.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from xsample.rundir.provenance import determining_part

# Keys derived from the others (labels) or set while running (the base run a fine-tune starts from).
DERIVED_KEYS = ("experiment", "init_from")
MAX_TAG_CHARS = 60
MAX_READABLE_KEYS = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,-]+")
ABSENT = "<absent>"


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values; lists and scalars are leaves."""
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _comparable(config: dict[str, Any] | None) -> dict[str, Any]:
    part = determining_part(config or {})
    return flatten({key: value for key, value in part.items() if key not in DERIVED_KEYS})


def config_differences(config: dict[str, Any] | None, other: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (value in ``config``, value in ``other``) for every key whose values differ."""
    mine, theirs = _comparable(config), _comparable(other)
    return {key: (mine.get(key, ABSENT), theirs.get(key, ABSENT)) for key in sorted(set(mine) | set(theirs))
            if _canonical(mine.get(key, ABSENT)) != _canonical(theirs.get(key, ABSENT))}


def describe_differences(differences: dict[str, tuple[Any, Any]], limit: int = 8) -> str:
    """'key a -> b, ...' (at most ``limit`` keys, then a count)."""
    parts = [f"{key} {_text(old)} -> {_text(new)}" for key, (old, new) in list(differences.items())[:limit]]
    if len(differences) > limit:
        parts.append(f"and {len(differences) - limit} more")
    return ", ".join(parts)


def variant(config: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Dotted key -> this run's value, for every key where ``config`` departs from ``reference``."""
    return {key: new for key, (_, new) in config_differences(reference, config).items()}


def variant_label(departures: dict[str, Any]) -> str | None:
    """Readable form of a variant ('method.temperature=0.2, optim.epochs=2'), None for the reference itself."""
    if not departures:
        return None
    return ", ".join(f"{key}={_text(value)}" for key, value in departures.items())


def variant_tag(departures: dict[str, Any]) -> str | None:
    """Directory-safe form of a variant: the readable pairs when few, short and safe, else a hash of them.

    A value such as '../../x' never reaches a path: a pair with anything outside [A-Za-z0-9_.=,-] or
    with '..', like a long or many-keyed variant, is replaced by a hash of the exact variant."""
    if not departures:
        return None
    digest = hashlib.sha256(_canonical(departures).encode()).hexdigest()[:10]
    pairs = [f"{key}={_text(value)}" for key, value in departures.items()]
    safe = all(not _UNSAFE.search(pair) and ".." not in pair for pair in pairs)
    readable = "+".join(pairs)
    if safe and len(pairs) <= MAX_READABLE_KEYS and len(readable) <= MAX_TAG_CHARS:
        return readable
    return f"v-{digest}"


def run_name(labels: dict[str, Any]) -> str:
    """Readable, deterministic directory name of one run within its sweep: labels, then the variant tag."""
    parts = [str(labels["method"]), str(labels["dataset"])]
    if labels.get("setting"):
        parts.append(str(labels["setting"]))
    parts.append(f"seed{labels['seed']}")
    name = _UNSAFE.sub("-", "_".join(parts)).replace("..", "-")
    tag = labels.get("variant_tag")
    return f"{name}+{tag}" if tag else name


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
