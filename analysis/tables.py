"""Aggregate completed runs into table cells and evaluate the paper's claims against them.

Every function returns a plain DataFrame; report.py renders them (Markdown, LaTeX, CSV).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.collect import current_runs
from analysis.reported import COMPUTE_FIELDS, EVALUATION_COLUMNS, ReportedNumber

# Metrics with their own table layout, kept out of the generic evaluation columns.
SPECIAL_PREFIXES = ("compute.", "graph_similarity.")
# How a scale's values stand against the paper's (configs/scale/*.yaml scale.comparability, recorded in each
# run's experiment block): only "paper" values are set against reported numbers; "miniature" tables keep
# orderings and signs; "plumbing" numbers (scale=rehearsal) measure nothing.
COMPARABILITIES = ("paper", "miniature", "plumbing")
# How a table is laid out (configs/table/*.yaml table.layout, recorded likewise).
LAYOUTS = ("metrics", "data_scarcity", "graph_similarity", "compute")
CELL_COLUMNS = ["method", "method_role", "setting", "variant", "dataset", "column", "mean", "std", "n", "gain_over_untrained", "reported",
                "paper_version", "source", "diff", "tolerance", "flag"]
# Each run records its method's role (xsample.methods.ROLES, result.json experiment.method_role): gains are
# measured against the "untrained" row (the same network at initialisation); every trained row must clear the
# rows that train nothing; "label_free" rows (no labels, class names or graph) are the level a sanity run
# (supervision detached from the images) must fall to. X-CLR on captions falls to CLIP, which still pairs each
# image with its caption.
UNTRAINED_ROLE = "untrained"
NOT_TRAINED_ROLES = ("untrained", "baseline")
LABEL_FREE_ROLE = "label_free"
# A sanity run within this many points of the label-free method (or below it) has lost its supervised
# advantage (issue 9's criterion); more means the loss still sees labels or graph rows matching the images.
SANITY_TOLERANCE_POINTS = 2.0
# Fewer seeds than this on either side of a comparison give no verdict: one seed has no spread to measure
# the difference against, so a check or claim then reads "untested" instead of yes or no.
MIN_SEEDS_FOR_VERDICT = 2
CHECK_COLUMNS = ["check", "dataset", "column", "row", "reference", "difference", "two_std", "n_row", "n_reference",
                 "passes"]
CLAIM_COLUMNS = ["id", "claim", "dataset", "reported", "paper_version", "source", "reproduced", "reproduced_low",
                 "reproduced_high", "n_minuend", "n_subtrahend", "sign_holds", "within_tolerance", "note"]


def completed_runs(runs: pd.DataFrame, table: str, scale: str, *, own_only: bool = False) -> pd.DataFrame:
    """The counted completed runs of ``table`` at ``scale``; ``own_only``: without variants (the runs the
    table's own grid defines, the only ones a figure or a paper claim compares)."""
    runs = current_runs(runs)
    mask = [_matches(t, table) and _matches(s, scale) and _matches(status, "completed") and (not own_only or _matches(v, None))
            for t, s, status, v in zip(runs["table"], runs["scale"], runs["status"], runs["variant"], strict=True)]
    return runs[pd.Series(mask, index=runs.index, dtype=bool)]


def table_facts(runs: pd.DataFrame, table: str, scale: str) -> tuple[str, str]:
    """(layout, comparability) of a table at a scale, as its runs recorded them from configs/."""
    mine = runs[[_matches(t, table) and _matches(s, scale) for t, s in zip(runs["table"], runs["scale"], strict=True)]]
    facts = []
    for label, allowed in (("layout", LAYOUTS), ("comparability", COMPARABILITIES)):
        values = {value for value in mine[label] if isinstance(value, str)}
        if len(values) != 1 or not values <= set(allowed):
            raise ValueError(f"the runs of table {table} at scale {scale} record {label} {sorted(values) or 'none'}; "
                             f"expected one of {', '.join(allowed)} (rerun them with the current configs/)")
        facts.append(values.pop())
    return facts[0], facts[1]


def evaluation_columns(runs: pd.DataFrame) -> list[str]:
    """Metric columns ("imagenet.top1", ...) with at least one value among `runs`."""
    return [column for column in runs.columns
            if "." in column and not column.startswith(SPECIAL_PREFIXES) and runs[column].notna().any()]


def _matches(value: object, wanted: object) -> bool:
    """Label equality where None/NaN mean "no label" on both sides."""
    missing = value is None or (not isinstance(value, str) and bool(pd.isna(value)))
    return wanted is None if missing else bool(value == wanted)


def _select(runs: pd.DataFrame, method: str, dataset: str | None, setting: str | None,
            variant: str | None = None) -> pd.DataFrame:
    """The runs of one table row; ``variant`` None selects the table's own runs (no variant).
    The mask is built in Python: label columns may be any pandas string dtype, or empty."""
    mask = [_matches(m, method) and _matches(s, setting) and _matches(v, variant) and (dataset is None or _matches(d, dataset))
            for m, s, v, d in zip(runs["method"], runs["setting"], runs["variant"], runs["dataset"], strict=True)]
    return runs[pd.Series(mask, index=runs.index, dtype=bool)]


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def metric_cells(runs: pd.DataFrame, table: str, scale: str, reported: list[ReportedNumber],
                 comparable: bool) -> pd.DataFrame:
    """One row per (method, setting, variant, dataset, evaluation column): reproduced mean/std/n over completed
    seeds next to the reported absolute value (only for the table's own runs: a variant is compared with
    nothing the paper reports). Reported cells without a run appear with n = 0."""
    done = completed_runs(runs, table, scale)
    # Miniature scales measure other data and models: their cells are never set against the paper's values.
    absolute = [entry for entry in reported if entry.table == table and entry.kind == "absolute" and comparable]
    keys = {(m, None if _matches(s, None) else s, None if _matches(v, None) else v, d)
            for m, s, v, d in zip(done["method"], done["setting"], done["variant"], done["dataset"], strict=True)}
    keys |= {(entry.row, entry.setting, None, entry.dataset) for entry in absolute if entry.dataset is not None}
    columns = evaluation_columns(done)
    columns += sorted({entry.column for entry in absolute if entry.column not in columns
                       and not entry.column.startswith(SPECIAL_PREFIXES)})
    roles = {method: role for method, role in zip(done["method"], done["method_role"], strict=True)
             if isinstance(role, str)}
    cells = []
    for method, setting, variant, dataset in sorted(keys, key=lambda key: tuple(str(part) for part in key)):
        selected = _select(done, method, dataset, setting, variant)
        for column in columns:
            values = selected[column].dropna() if column in selected else pd.Series(dtype=float)
            entry = None if variant is not None else next(
                (e for e in absolute if (e.row, e.setting, e.dataset, e.column) == (method, setting, dataset, column)), None)
            if values.empty and entry is None:
                continue
            mean = float(values.mean()) if len(values) else math.nan
            reported_value = entry.value if entry is not None and entry.value is not None else math.nan
            diff = mean - reported_value
            cells.append({
                "method": method, "method_role": roles.get(method), "setting": setting, "variant": variant, "dataset": dataset, "column": column,
                "mean": mean, "std": _std(values), "n": len(values), "gain_over_untrained": math.nan,
                "reported": reported_value, "paper_version": _versions(entry), "source": entry.source if entry else None,
                "diff": diff, "tolerance": entry.tolerance if entry else math.nan,
                "flag": bool(entry is not None and not math.isnan(diff) and abs(diff) > entry.tolerance),
            })
    frame = pd.DataFrame(cells, columns=CELL_COLUMNS)
    frame["gain_over_untrained"] = [_gain_over_untrained(frame, cell) for cell in frame.itertuples(index=False)]
    return frame


def _methods_with_role(cells: pd.DataFrame, *roles: str) -> list[str]:
    return sorted({method for method, role in zip(cells["method"], cells["method_role"], strict=True) if role in roles})


def _gain_over_untrained(cells: pd.DataFrame, cell) -> float:
    if cell.method_role == UNTRAINED_ROLE or cell.n == 0:
        return math.nan
    baseline = next((found for method in _methods_with_role(cells, UNTRAINED_ROLE)
                     for found in [_reference_cell(cells, cell, method)] if found is not None), None)
    return cell.mean - baseline.mean if baseline is not None else math.nan


def _reference_cell(cells: pd.DataFrame, cell, method: str):
    """The cell of ``method`` a row is compared with, same dataset and column: the table's own runs of that
    method (no variant; a sanity or other variant run is compared with them too) at the same setting, else
    those without a setting, else its only row (tables whose setting is the row name, as Table 2)."""
    candidates = cells[(cells["method"] == method) & (cells["dataset"] == cell.dataset) & (cells["column"] == cell.column)
                       & (cells["n"] > 0) & cells["variant"].map(lambda v: _matches(v, None))]
    for setting in dict.fromkeys([cell.setting if isinstance(cell.setting, str) else None, None]):
        chosen = candidates[candidates["setting"].map(lambda s, wanted=setting: _matches(s, wanted))]
        if len(chosen):
            return next(chosen.itertuples(index=False))
    return next(candidates.itertuples(index=False)) if len(candidates) == 1 else None


def column_rank(column: str) -> tuple[int, str]:
    """Evaluation columns in the paper's order (as in Table 1), others after them by name."""
    return (EVALUATION_COLUMNS.index(column) if column in EVALUATION_COLUMNS else len(EVALUATION_COLUMNS), column)


def known_answer_checks(cells: pd.DataFrame) -> pd.DataFrame:
    """Whether the table's numbers could have come out otherwise, on its first evaluation column: every
    trained row against each baseline row (it must clear it by more than twice the spread of the difference),
    every supervised row against the label-free method (the supervised advantage the sanity runs must lose),
    and every sanity-run row against the label-free method (it must fall to its level)."""
    if cells is None or cells.empty:
        return pd.DataFrame(columns=CHECK_COLUMNS)
    primary = min(dict.fromkeys(cells["column"]), key=column_rank)
    baselines = _methods_with_role(cells, *NOT_TRAINED_ROLES)
    label_free_methods = _methods_with_role(cells, LABEL_FREE_ROLE)
    rows = []
    for cell in cells[(cells["column"] == primary) & (cells["n"] > 0)].itertuples(index=False):
        sanity_run = isinstance(cell.variant, str)
        if cell.method_role in NOT_TRAINED_ROLES or (sanity_run and not cell.variant.startswith("sanity=")):
            continue
        label_free = next((found for method in label_free_methods if method != cell.method
                           for found in [_reference_cell(cells, cell, method)] if found is not None), None)
        if sanity_run:
            if label_free is not None:
                rows.append(_check_row(cell, label_free, "loses its supervised advantage",
                                       passes=_verdict(cell, label_free, cell.mean - label_free.mean <= SANITY_TOLERANCE_POINTS)))
            continue
        for baseline in baselines:
            reference = _reference_cell(cells, cell, baseline)
            if reference is not None:
                rows.append(_check_row(cell, reference, "clears the baseline", passes=_clears(cell, reference)))
        if cell.method_role != LABEL_FREE_ROLE and label_free is not None:
            rows.append(_check_row(cell, label_free, "beats the label-free method", passes=_clears(cell, label_free)))
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def has_enough_seeds(*counts: int) -> bool:
    """Whether every side of a comparison has the seeds a verdict needs (MIN_SEEDS_FOR_VERDICT)."""
    return all(count >= MIN_SEEDS_FOR_VERDICT for count in counts)


def _verdict(cell, reference, holds: bool) -> bool | None:
    """``holds`` as the check's verdict, or None (untested) when either side has too few seeds."""
    return bool(holds) if has_enough_seeds(cell.n, reference.n) else None


def _spread(cell, reference) -> float:
    """Twice the standard deviation of the difference of two means over seeds (nan with one seed)."""
    return 2 * math.sqrt(cell.std ** 2 + reference.std ** 2) if has_enough_seeds(cell.n, reference.n) else math.nan


def _clears(cell, reference) -> bool | None:
    difference = cell.mean - reference.mean
    return _verdict(cell, reference, difference > 0 and difference > _spread(cell, reference))


def row_label(method: str, setting: object, variant: object) -> str:
    """How reports name a table row outside the table itself: "method (setting) [variant]"."""
    label = method + (f" ({setting})" if isinstance(setting, str) and setting else "")
    return label + (f" [{variant}]" if isinstance(variant, str) and variant else "")


def _check_row(cell, reference, expectation: str, passes: bool | None) -> dict:
    label = row_label(cell.method, cell.setting, cell.variant)
    return {"check": f"{label} {expectation}", "dataset": cell.dataset, "column": cell.column, "row": label,
            "reference": reference.method, "difference": cell.mean - reference.mean,
            "two_std": _spread(cell, reference), "n_row": cell.n, "n_reference": reference.n, "passes": passes}


def _versions(entry: ReportedNumber | None) -> str | None:
    return ",".join(entry.paper_versions) if entry is not None else None


def claims(runs: pd.DataFrame, table: str, scale: str, reported: list[ReportedNumber]) -> pd.DataFrame:
    """Each difference claim of `table`, evaluated as mean(minuend) - mean(subtrahend) over completed seeds
    of the table's own runs (variants excluded). A claim whose pretraining dataset the paper does not state
    is evaluated on every dataset that has runs."""
    done = completed_runs(runs, table, scale, own_only=True)
    rows = []
    for entry in reported:
        if entry.table != table or entry.kind == "absolute":
            continue
        datasets = [entry.dataset] if entry.dataset else sorted(d for d in done["dataset"].dropna().unique())
        for dataset in datasets or [None]:
            rows.append(_evaluate_claim(entry, done, dataset))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _evaluate_claim(entry: ReportedNumber, done: pd.DataFrame, dataset: str | None) -> dict:
    minuend = _select(done, entry.minuend, dataset, entry.setting)
    subtrahend = _select(done, entry.subtrahend, dataset, entry.setting)
    differences = [float(minuend[c].mean() - subtrahend[c].mean()) for c in entry.columns
                   if c in done and minuend[c].notna().any() and subtrahend[c].notna().any()]
    columns = entry.columns[0] if len(entry.columns) == 1 else f"{entry.columns[0].split('.')[0]} ({len(entry.columns)} variants)"
    note = entry.note or ""
    if entry.dataset is None and dataset is not None:
        note = f"{note}; evaluated on {dataset}".lstrip("; ")
    row = {
        "id": entry.id, "claim": f"{entry.minuend} − {entry.subtrahend}, {columns}", "dataset": dataset,
        "reported": entry.describe(), "paper_version": _versions(entry), "source": entry.source,
        "reproduced": math.nan, "reproduced_low": math.nan, "reproduced_high": math.nan,
        "n_minuend": _runs_with_values(minuend, entry.columns), "n_subtrahend": _runs_with_values(subtrahend, entry.columns),
        "sign_holds": None, "within_tolerance": None, "note": note,
    }
    if not differences:
        return row
    low, high = min(differences), max(differences)
    row.update(reproduced_low=low, reproduced_high=high)
    if entry.kind == "difference":
        row["reproduced"] = differences[0]
    if entry.known and has_enough_seeds(row["n_minuend"], row["n_subtrahend"]):
        reported_low = entry.value if entry.kind == "difference" else entry.low
        reported_high = entry.value if entry.kind == "difference" else entry.high
        if reported_low > 0:
            row["sign_holds"] = low > 0
        elif reported_high < 0:
            row["sign_holds"] = high < 0
        row["within_tolerance"] = reported_low - entry.tolerance <= low and high <= reported_high + entry.tolerance
    return row


def _runs_with_values(runs: pd.DataFrame, columns: tuple[str, ...]) -> int:
    present = [c for c in columns if c in runs]
    return int(runs[present].notna().any(axis=1).sum()) if present else 0


def compute_table(runs: pd.DataFrame, table: str, scale: str) -> tuple[pd.DataFrame, dict]:
    """Per method: step time, throughput, step-time ratio vs SimCLR, peak memory (mean over completed
    compute runs), and the shared settings (batch size, backbone, graph precompute)."""
    done = completed_runs(runs, table, scale, own_only=True)
    measurements = [run["compute"] for run in done["metrics"] if isinstance(run, dict) and isinstance(run.get("compute"), dict)]
    # The methods are those the runs timed (configs/table/compute.yaml), in the order they were timed.
    methods = dict.fromkeys(key for m in measurements for key, value in m.items() if isinstance(value, dict))
    rows = []
    for method in methods:
        per_run = [m[method] for m in measurements if isinstance(m.get(method), dict)]
        if not per_run:
            continue
        rows.append({"method": method, **{key: _mean([r.get(key) for r in per_run])
                                          for key in COMPUTE_FIELDS}, "n": len(per_run)})
    frame = pd.DataFrame(rows, columns=["method", *COMPUTE_FIELDS, "n"])
    # The method the overhead is measured against (configs/table/compute.yaml compute.overhead, as recorded).
    against = next((m["overhead_against"] for m in reversed(measurements) if m.get("overhead_against")), None)
    reference = frame.loc[frame["method"] == against, "step_ms"]
    frame.insert(3, "ratio", frame["step_ms"] / reference.iloc[0] if len(reference) else math.nan)
    settings = {key: measurements[-1].get(key) for key in ("overhead_against", "batch_size", "backbone", "graph_precompute_s",
                                                           "graph_precompute_samples")} if measurements else {}
    return frame, settings


def _mean(values: list) -> float:
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(numbers) / len(numbers) if numbers else math.nan


def graph_similarity_table(runs: pd.DataFrame, table: str, scale: str) -> pd.DataFrame:
    """Fig. 5 summary statistics per graph (class names vs captions), mean over completed runs."""
    done = completed_runs(runs, table, scale, own_only=True)
    stats = [c for c in done.columns if c.startswith("graph_similarity.") and done[c].notna().any()]
    if done.empty or not stats:
        return pd.DataFrame(columns=["setting", "n"])
    grouped = done.groupby(done["setting"].fillna("—"))
    frame = grouped[stats].mean()
    frame.columns = [c.removeprefix("graph_similarity.") for c in stats]
    leading = [c for c in ("num_nodes", "pairs", "mean", "std") if c in frame.columns]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    frame.insert(0, "n", grouped.size())
    return frame.reset_index()


def histograms(runs: pd.DataFrame, table: str, scale: str) -> list[dict]:
    """The stored similarity histograms of the fig5 runs: setting, graph, edges, counts."""
    done = completed_runs(runs, table, scale, own_only=True)
    found = []
    for setting, metrics in zip(done["setting"], done["metrics"], strict=True):
        similarity = metrics.get("graph_similarity", {}) if isinstance(metrics, dict) else {}
        histogram = similarity.get("histogram") or {}
        if histogram.get("edges") and histogram.get("counts"):
            found.append({"setting": setting, "graph": similarity.get("graph") or setting,
                          "edges": histogram["edges"], "counts": histogram["counts"]})
    return found
