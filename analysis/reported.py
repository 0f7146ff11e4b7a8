"""Load and validate analysis/reported_numbers.yaml: the numbers the paper is known to report."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from analysis.catalog import table_names

DEFAULT_FILE = Path(__file__).with_name("reported_numbers.yaml")
PAPER_VERSIONS = ("workshop", "v1", "v2")
# absolute / difference / difference_range: a number the paper reports (a cell, or minuend minus subtrahend).
# upper_bound: the cell is below `high` (what a review's statement bounds, not a value).
# ordering: a qualitative claim that the minuend row is above (`expect: above`) or at least level with
#   (`expect: at_least`) the subtrahend row. gain_shrinks: minuend minus subtrahend is smaller on the second of
#   `datasets` than on the first (`value`, optional: the reported shrink). The report flags a reversed claim.
KINDS = ("absolute", "difference", "difference_range", "upper_bound", "ordering", "gain_shrinks")
QUALITATIVE_KINDS = ("ordering", "gain_shrinks")
# Who states the fact: the paper itself (abstracts, tables quoted in reviews), a reviewer's reading of it, or a
# third party's second-hand reading; the report labels the last two.
ORIGINS = ("paper", "review", "third_party")
EXPECTATIONS = ("above", "at_least")
TABLES = tuple(table_names())
# Metric columns an entry may name, in the paper's table order (the report orders columns by this).
EVALUATION_COLUMNS = ("imagenet.top1", "imagenet.knn_top1", "zero_shot.imagenet", "imagenet_real.top1",
                      "imagenet9.original", "imagenet9.only_fg", "imagenet9.no_fg", "imagenet9.mixed_same",
                      "imagenet9.mixed_rand", "imagenet9.bg_gap", "objectnet.top1", "mit_states.objects",
                      "mit_states.attributes",
                      # The harness's own evaluations (not in the paper's tables) after the paper's columns.
                      "few_label.top1_1pct", "few_label.top1_10pct", "heldout_classes.top1", "heldout_classes.knn_top1",
                      "heldout_classes.family_knn_top1",
                      "graph_alignment.pearson")
# What the compute table measures per method (xsample/tasks/compute.py).
COMPUTE_FIELDS = ("step_ms", "images_per_s", "peak_mem_mb")
# compute.<method>.<field>, and the overhead ratio compute.<method>_over_<reference> (configs/table/compute.yaml).
COMPUTE_COLUMN_PATTERN = re.compile(rf"compute\.(\w+_over_\w+|\w+\.({'|'.join(COMPUTE_FIELDS)}))")
GRAPH_COLUMN_PREFIX = "graph_similarity."
TOP_LEVEL_FIELDS = ("default_tolerance", "entries")
ENTRY_FIELDS = ("id", "table", "kind", "row", "setting", "dataset", "datasets", "column", "columns", "value", "low",
                "high", "minuend", "subtrahend", "minuend_setting", "subtrahend_setting", "expect", "paper_version",
                "source", "origin", "tolerance", "note")


class ReportedNumbersError(ValueError):
    """A malformed reported-numbers file; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class ReportedNumber:
    id: str
    table: str
    kind: str
    dataset: str | None
    columns: tuple[str, ...]
    paper_versions: tuple[str, ...]
    source: str
    tolerance: float
    row: str | None = None
    setting: str | None = None
    minuend: str | None = None
    subtrahend: str | None = None
    value: float | None = None
    low: float | None = None
    high: float | None = None
    note: str | None = None
    origin: str = "paper"
    datasets: tuple[str, ...] = ()
    minuend_setting: str | None = None
    subtrahend_setting: str | None = None
    expect: str | None = None

    @property
    def column(self) -> str:
        return self.columns[0]

    @property
    def known(self) -> bool:
        return self.value is not None or self.low is not None or self.high is not None or self.kind in QUALITATIVE_KINDS

    def row_label(self, side: str) -> str:
        """The minuend or subtrahend row as the report names rows: "method (setting)"."""
        method, setting = (self.minuend, self.minuend_setting) if side == "minuend" else (self.subtrahend, self.subtrahend_setting)
        setting = setting or self.setting
        return f"{method} ({setting})" if setting else str(method)

    def describe(self) -> str:
        """Human-readable reported value, e.g. '+17.2', '+3.3 to +5.6', '63.4', '< 78.7' or 'not public'."""
        if not self.known:
            return "not public"
        if self.kind == "absolute":  # percent points, or a similarity below 1 (Fig. 5)
            return f"{self.value:.{2 if abs(self.value) < 1 else 1}f}"
        if self.kind == "difference":
            return f"{self.value:+.1f}"
        if self.kind == "upper_bound":
            return f"< {self.high:.1f}"
        if self.kind == "ordering":
            relation = ">" if self.expect == "above" else "≥"
            return f"{self.row_label('minuend')} {relation} {self.row_label('subtrahend')}"
        if self.kind == "gain_shrinks":
            shrink = f" by {self.value:.1f}" if self.value is not None else ""
            return f"{self.minuend} − {self.subtrahend} shrinks{shrink} from {self.datasets[0]} to {self.datasets[1]}"
        return f"{self.low:+.1f} to {self.high:+.1f}"


def load_reported(path: Path | str = DEFAULT_FILE, paper_version: str = "v2") -> list[ReportedNumber]:
    """The entries that apply to `paper_version` (each id at most once)."""
    if paper_version not in PAPER_VERSIONS:
        raise ReportedNumbersError(f"unknown paper version {paper_version!r}; choose one of {', '.join(PAPER_VERSIONS)}")
    return [entry for entry in load_all(path) if paper_version in entry.paper_versions]


def load_all(path: Path | str = DEFAULT_FILE) -> list[ReportedNumber]:
    """Every entry of the file, validated; an id may repeat only across distinct paper versions."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ReportedNumbersError(f"{path.name}: cannot read: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise ReportedNumbersError(f"{path.name}: expected a mapping with a list under 'entries'")
    unknown = sorted(set(document) - set(TOP_LEVEL_FIELDS))
    if unknown:
        raise ReportedNumbersError(f"{path.name}: unknown top-level field(s) {', '.join(map(repr, unknown))}; "
                                   f"allowed: {', '.join(TOP_LEVEL_FIELDS)}")
    tolerances = _default_tolerances(path.name, document.get("default_tolerance") or {})
    entries = [_parse_entry(path.name, index, raw, tolerances) for index, raw in enumerate(document["entries"])]
    seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        for version in entry.paper_versions:
            if (entry.id, version) in seen:
                raise ReportedNumbersError(
                    f"{path.name} entry {index} ({entry.id}): field 'paper_version': {version} already given "
                    f"by entry {seen[entry.id, version]} with the same id")
            seen[entry.id, version] = index
    return entries


def _default_tolerances(filename: str, raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ReportedNumbersError(f"{filename}: 'default_tolerance' must map kind -> number")
    tolerances = {kind: 1.0 for kind in KINDS}  # upper bounds and qualitative claims compare no magnitude
    for kind, value in raw.items():
        if kind not in KINDS or not _is_number(value):
            raise ReportedNumbersError(f"{filename}: default_tolerance.{kind} must be a number for one of {', '.join(KINDS)}")
        tolerances[kind] = float(value)
    return tolerances


def known_column(column: str) -> bool:
    return column in EVALUATION_COLUMNS or COMPUTE_COLUMN_PATTERN.fullmatch(column) is not None or column.startswith(GRAPH_COLUMN_PREFIX)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_entry(filename: str, index: int, raw: Any, tolerances: dict[str, float]) -> ReportedNumber:
    label = raw.get("id") if isinstance(raw, dict) else None

    def fail(field: str, problem: str) -> ReportedNumbersError:
        return ReportedNumbersError(f"{filename} entry {index} ({label or '?'}): field '{field}' {problem}")

    if not isinstance(raw, dict):
        raise fail("-", "entry must be a mapping")
    unknown = sorted(str(field) for field in set(raw) - set(ENTRY_FIELDS))
    if unknown:
        raise fail(unknown[0], f"is not a known field (a misspelling?); allowed: {', '.join(ENTRY_FIELDS)}")

    def text(field: str, required: bool = True) -> str | None:
        value = raw.get(field)
        if value is None and not required:
            return None
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            raise fail(field, "must be a non-empty string" + ("" if required else " or null"))
        return str(value)

    def number(field: str) -> float | None:
        value = raw.get(field)
        if value is not None and not _is_number(value):
            raise fail(field, "must be a number or null")
        return None if value is None else float(value)

    entry_id = text("id")
    table = text("table")
    if table not in TABLES:
        raise fail("table", f"must be one of {', '.join(TABLES)}")
    kind = text("kind")
    if kind not in KINDS:
        raise fail("kind", f"must be one of {', '.join(KINDS)}")

    versions = raw.get("paper_version")
    versions = [versions] if isinstance(versions, str) else versions
    if not isinstance(versions, list) or not versions or any(v not in PAPER_VERSIONS for v in versions):
        raise fail("paper_version", f"must be one of {', '.join(PAPER_VERSIONS)} or a list of them")

    if kind == "difference_range":
        columns = raw.get("columns")
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) and "." in c for c in columns):
            raise fail("columns", "must be a list of 'evaluation.metric' names")
    else:
        column = text("column")
        if "." not in column:
            raise fail("column", "must be 'evaluation.metric', e.g. imagenet.top1")
        columns = [column]
    for column in columns:
        if not known_column(column):
            raise fail("column" if kind != "difference_range" else "columns",
                       f"names unknown metric {column!r}; known: {', '.join(EVALUATION_COLUMNS)}, compute.<method>.<{'|'.join(COMPUTE_FIELDS)}>, "
                       f"{GRAPH_COLUMN_PREFIX}*")

    fields: dict[str, Any] = {}
    if kind == "absolute":
        fields["row"] = text("row")
        fields["value"] = number("value")
    elif kind == "upper_bound":
        fields["row"] = text("row")
        fields["high"] = number("high")
        if fields["high"] is None:
            raise fail("high", "must be the bound (a number)")
    elif kind in QUALITATIVE_KINDS:
        fields["minuend"], fields["subtrahend"] = text("minuend"), text("subtrahend")
        fields["minuend_setting"] = text("minuend_setting", required=False)
        fields["subtrahend_setting"] = text("subtrahend_setting", required=False)
        if kind == "ordering":
            fields["expect"] = text("expect")
            if fields["expect"] not in EXPECTATIONS:
                raise fail("expect", f"must be one of {', '.join(EXPECTATIONS)}")
        else:
            datasets = raw.get("datasets")
            if not isinstance(datasets, list) or len(datasets) != 2 or not all(isinstance(d, str) for d in datasets):
                raise fail("datasets", "must list two pretraining datasets, the gain's first and second")
            fields["datasets"] = tuple(datasets)
            fields["value"] = number("value")
    else:
        fields["minuend"], fields["subtrahend"] = text("minuend"), text("subtrahend")
        if kind == "difference":
            fields["value"] = number("value")
        else:
            fields["low"], fields["high"] = number("low"), number("high")
            if (fields["low"] is None) != (fields["high"] is None):
                raise fail("high" if fields["high"] is None else "low", "must be given together with the other bound")
            if fields["low"] is not None and fields["low"] > fields["high"]:
                raise fail("low", "must not exceed 'high'")

    tolerance = number("tolerance")
    if tolerance is not None and tolerance < 0:
        raise fail("tolerance", "must not be negative")
    origin = text("origin", required=False) or "paper"
    if origin not in ORIGINS:
        raise fail("origin", f"must be one of {', '.join(ORIGINS)}")
    return ReportedNumber(
        id=entry_id, table=table, kind=kind, dataset=text("dataset", required=False), columns=tuple(columns),
        paper_versions=tuple(versions), source=text("source"), origin=origin,
        tolerance=tolerances[kind] if tolerance is None else tolerance,
        setting=text("setting", required=False), note=text("note", required=False), **fields,
    )
