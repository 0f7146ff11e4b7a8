"""The tables and scales the harness defines, read from configs/ (their one source)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


@lru_cache(maxsize=1)
def table_names() -> dict[str, str]:
    """Table id -> the name reports give it ("1" -> "Table 1", "fig3" -> "Fig. 3 (data scarcity)")."""
    names = {}
    for path in sorted((CONFIGS_DIR / "table").glob("*.yaml")):
        table = (yaml.safe_load(path.read_text()) or {}).get("table") or {}
        names[str(table.get("id", path.stem))] = str(table.get("name") or f"Table {path.stem}")
    return names


@lru_cache(maxsize=1)
def row_readings() -> dict[str, str]:
    """Table id -> whose reading its rows are, for tables that say (``table.rows_reading``: Table 2's rows
    are harness readings, the paper's own rows not being public)."""
    readings = {}
    for path in sorted((CONFIGS_DIR / "table").glob("*.yaml")):
        table = (yaml.safe_load(path.read_text()) or {}).get("table") or {}
        if table.get("rows_reading"):
            readings[str(table.get("id", path.stem))] = str(table["rows_reading"])
    return readings


def scales() -> list[str]:
    return sorted(path.stem for path in (CONFIGS_DIR / "scale").glob("*.yaml"))
