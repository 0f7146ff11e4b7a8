"""The tables and scales the harness defines, read from configs/ (their one source)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


@lru_cache(maxsize=1)
def tables() -> dict[str, dict]:
    """Table id -> its ``table`` section (configs/table/<file>.yaml; the id defaults to the file name)."""
    tables = {}
    for path in sorted((CONFIGS_DIR / "table").glob("*.yaml")):
        table = (yaml.safe_load(path.read_text()) or {}).get("table") or {}
        tables[str(table.get("id", path.stem))] = {**table, "file": path.stem}
    return tables


def table_names() -> dict[str, str]:
    """Table id -> the name reports give it ("1" -> "Table 1", "fig3" -> "Fig. 3 (data scarcity)")."""
    return {id_: str(table.get("name") or f"Table {table['file']}") for id_, table in tables().items()}


def row_readings() -> dict[str, str]:
    """Table id -> whose reading its rows are, for tables that say (``table.rows_reading``: Table 2's rows
    are harness readings, the paper's own rows not being public)."""
    return {id_: str(table["rows_reading"]) for id_, table in tables().items() if table.get("rows_reading")}


def scales() -> list[str]:
    return sorted(path.stem for path in (CONFIGS_DIR / "scale").glob("*.yaml"))
