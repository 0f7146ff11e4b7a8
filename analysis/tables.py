"""Aggregate completed runs into table cells and evaluate the paper's claims against them.

Every function returns a plain DataFrame; report.py renders them (Markdown, LaTeX, CSV).
"""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import t as student_t

from analysis.collect import current_runs
from analysis.reported import COMPUTE_FIELDS, EVALUATION_COLUMNS, ReportedNumber
from xsample.methods import graph_label

# Metrics with their own table layout, kept out of the generic evaluation columns.
SPECIAL_PREFIXES = ("compute.", "graph_similarity.", "graph_diagnostics.")
# How a scale's values stand against the paper's (configs/scale/*.yaml scale.comparability, recorded in each
# run's experiment block): only "paper" values are set against reported numbers; "miniature" tables keep
# orderings and signs; "plumbing" numbers (scale=rehearsal) measure nothing.
COMPARABILITIES = ("paper", "miniature", "plumbing")
# How a table is laid out (configs/table/*.yaml table.layout, recorded likewise).
LAYOUTS = ("metrics", "data_scarcity", "graph_similarity", "compute")
CELL_COLUMNS = ["method", "method_role", "method_targets", "setting", "variant", "dataset", "sanity", "graph", "column",
                "mean", "std", "n", "gain_over_untrained", "reported", "paper_version", "source", "diff", "tolerance",
                "flag"]
# Each run records its method's role and targets (xsample.methods, result.json experiment.method_role and
# method_targets): gains are measured against the "untrained" row (the same network at initialisation); every
# trained row must clear the rows that train nothing; "label_free" rows (no labels, class names or graph) are
# the level a sanity run (supervision detached from the images) must fall to. X-CLR on captions falls to CLIP,
# which still pairs each image with its caption.
UNTRAINED_ROLE = "untrained"
NOT_TRAINED_ROLES = ("untrained", "baseline")
LABEL_FREE_ROLE = "label_free"
# A sanity run within this many points of the label-free method (or below it) has lost its supervised
# advantage (issue 9's criterion); more means the loss still sees labels or graph rows matching the images.
SANITY_TOLERANCE_POINTS = 2.0
# sanity=permuted_graph keeps the graph's values and class identity, not their pairing (xsample/train/sanity.py).
PERMUTED_GRAPH = "permuted_graph"
# The random graphs (configs/graph/random.yaml): one vector per sample has no semantic edge, so X-CLR on it
# must fall to the label-free method's level; one per class carries the class identity alone, so it must
# stay with the method that trains on the true classes.
NO_EDGE_GRAPH = graph_label({"source": "random", "granularity": "sample"})
CLASS_ONLY_GRAPH = graph_label({"source": "random", "granularity": "class"})
# The row a class-only graph must stay level with: the method whose targets are the true classes (SupCon).
TRUE_CLASS_TARGETS = "labels"
# Fewer seeds than this on either side of a comparison give no verdict: one seed has no spread to measure
# the difference against, so a check or claim then reads "untested" instead of yes or no.
MIN_SEEDS_FOR_VERDICT = 2
# The sanity run that keeps X-CLR's graph values but scrambles their pairing (xsample/train/sanity.py). A
# permuted class-name graph still gives same-class samples one row, so the run keeps SupCon's class identity
# and does not fall to the label-free level: what it must lose is what the graph's between-class values add,
# measured where they act against the real-graph row: the agreement of the learned class similarities with
# the graph itself, and whether images of classes never seen in pretraining land among their family's seen
# classes. What the values are claimed to buy beyond that (held-out classes told apart, few labels) is
# reported for the pair on every column, whatever the outcome (method_comparisons), not checked.
PERMUTED_GRAPH_VARIANT = "sanity=permuted_graph"
GRAPH_VALUE_COLUMNS = ("graph_alignment.pearson", "heldout_classes.family_knn_top1")
# Pairs of trained rows a report compares on every column, whatever the outcome: the paper's X-CLR claims
# are claims against SupCon.
COMPARED_METHODS = (("xclr", "supcon"),)
COMPARISON_COLUMNS = ["comparison", "dataset", "column", "difference", "interval_95", "n_row", "n_reference", "verdict"]
CHECK_COLUMNS = ["check", "dataset", "column", "row", "reference", "difference", "interval_95", "n_row", "n_reference",
                 "passes"]
CLAIM_COLUMNS = ["id", "kind", "claim", "dataset", "reported", "paper_version", "origin", "source", "reproduced",
                 "reproduced_low", "reproduced_high", "n_minuend", "n_subtrahend", "interval_95", "resolved", "sign_holds",
                 "within_tolerance", "note"]


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
    targets = {method: target for method, target in zip(done["method"], done["method_targets"], strict=True)
               if isinstance(target, str)}
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
                "method": method, "method_role": roles.get(method), "method_targets": targets.get(method),
                "setting": setting, "variant": variant, "dataset": dataset,
                "sanity": _run_setting(selected, "sanity"), "graph": _run_setting(selected, "graph"), "column": column,
                "mean": mean, "std": _std(values), "n": len(values), "gain_over_untrained": math.nan,
                "reported": reported_value, "paper_version": _versions(entry), "source": entry.source if entry else None,
                "diff": diff, "tolerance": entry.tolerance if entry else math.nan,
                "flag": bool(entry is not None and not math.isnan(diff) and abs(diff) > entry.tolerance),
            })
    frame = pd.DataFrame(cells, columns=CELL_COLUMNS)
    frame["gain_over_untrained"] = [_gain_over_untrained(frame, cell) for cell in frame.itertuples(index=False)]
    return frame


def _methods_where(cells: pd.DataFrame, label: str, *values: str) -> list[str]:
    """The methods whose recorded ``label`` (method_role, method_targets) is one of ``values``."""
    return sorted({method for method, value in zip(cells["method"], cells[label], strict=True) if value in values})


def _first_reference(cells: pd.DataFrame, cell, methods: list[str]):
    """The reference cell (``_reference_cell``) of the first of ``methods`` that has one, else None."""
    return next((found for method in methods for found in [_reference_cell(cells, cell, method)] if found is not None),
                None)


def _run_setting(runs: pd.DataFrame, column: str) -> str | None:
    """A row's sanity check or graph label, as its runs record it (None when they record none)."""
    return next((value for value in runs[column] if isinstance(value, str)), None) if column in runs else None


def _gain_over_untrained(cells: pd.DataFrame, cell) -> float:
    if cell.method_role == UNTRAINED_ROLE or cell.n == 0:
        return math.nan
    baseline = _first_reference(cells, cell, _methods_where(cells, "method_role", UNTRAINED_ROLE))
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
    trained row against each baseline row (it must clear it by more than the 95% interval of the difference),
    every supervised row against the label-free method (the supervised advantage the sanity runs must lose),
    and every sanity-run row against the label-free method (it must fall to its level). The graph controls
    have their own expectations: a permuted-graph run must fall below the same method on the real graph (by
    more than that interval; on the GRAPH_VALUE_COLUMNS where the table has them, else on the first column),
    a random graph per sample to the label-free method's level, a random graph per class must stay at the
    true-class method's level (within the same tolerance)."""
    if cells is None or cells.empty:
        return pd.DataFrame(columns=CHECK_COLUMNS)
    primary = min(dict.fromkeys(cells["column"]), key=column_rank)
    baselines = _methods_where(cells, "method_role", *NOT_TRAINED_ROLES)
    label_free_methods = _methods_where(cells, "method_role", LABEL_FREE_ROLE)
    true_class_methods = _methods_where(cells, "method_targets", TRUE_CLASS_TARGETS)
    rows = []
    for cell in cells[(cells["column"] == primary) & (cells["n"] > 0)].itertuples(index=False):
        sanity = cell.sanity if isinstance(cell.sanity, str) and cell.sanity != "none" else None
        if cell.method_role in NOT_TRAINED_ROLES or (isinstance(cell.variant, str) and not cell.variant.startswith("sanity=")):
            continue
        label_free = _first_reference(cells, cell, [method for method in label_free_methods if method != cell.method])
        if sanity == PERMUTED_GRAPH:
            # The class identity survives the permutation: the run must lose the graph's values, not SupCon's level.
            rows += _permuted_graph_checks(cells, cell)
            continue
        if sanity is not None or cell.graph == NO_EDGE_GRAPH:
            if label_free is not None:
                expectation = "loses its supervised advantage" if sanity else "falls to the label-free method's level"
                rows.append(_check_row(cell, label_free, expectation,
                                       passes=_verdict(cell, label_free, cell.mean - label_free.mean <= SANITY_TOLERANCE_POINTS)))
            if sanity is not None:
                continue
        for baseline in baselines:
            reference = _reference_cell(cells, cell, baseline)
            if reference is not None:
                rows.append(_check_row(cell, reference, "clears the baseline", passes=_clears(cell, reference)))
        if cell.method_role != LABEL_FREE_ROLE and label_free is not None and cell.graph != NO_EDGE_GRAPH:
            rows.append(_check_row(cell, label_free, "beats the label-free method", passes=_clears(cell, label_free)))
        true_class = _first_reference(cells, cell, true_class_methods) if cell.graph == CLASS_ONLY_GRAPH else None
        if true_class is not None:
            rows.append(_check_row(cell, true_class, "stays at the true-class method's level",
                                   passes=_verdict(cell, true_class, true_class.mean - cell.mean <= SANITY_TOLERANCE_POINTS)))
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def _permuted_graph_checks(cells: pd.DataFrame, primary_cell) -> list[dict]:
    """A permuted-graph row against the same method's real-graph row, on the GRAPH_VALUE_COLUMNS where the row
    has them (where between-class values act), else on the first column (``primary_cell``)."""
    same_row = cells[(cells["method"] == primary_cell.method) & (cells["dataset"] == primary_cell.dataset)
                     & (cells["variant"] == primary_cell.variant) & cells["setting"].map(
                         lambda s: _matches(s, primary_cell.setting if isinstance(primary_cell.setting, str) else None))
                     & cells["column"].isin(GRAPH_VALUE_COLUMNS) & (cells["n"] > 0)]
    checked = sorted(same_row.itertuples(index=False), key=lambda c: GRAPH_VALUE_COLUMNS.index(c.column)) or [primary_cell]
    rows = []
    for cell in checked:
        real_graph = _real_graph_cell(cells, cell)
        if real_graph is not None:
            rows.append(_check_row(cell, real_graph, "falls below the real graph", passes=_clears(real_graph, cell)))
    return rows


def method_comparisons(cells: pd.DataFrame) -> pd.DataFrame:
    """Each pair of COMPARED_METHODS, and each real-graph row against its permuted-graph run, on every column
    both rows have: the difference, its 95% interval over seeds, and which row is ahead beyond it, or that the
    seeds cannot tell (a difference within the interval is unresolved: it may be anything up to it either way)."""
    rows = []
    if cells is None or cells.empty:
        return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    own = cells[cells["variant"].map(lambda v: _matches(v, None)) & (cells["n"] > 0)]
    pairs = [(cell, _reference_cell(cells, cell, other), row_label(method, cell.setting, None), other)
             for method, other in COMPARED_METHODS
             for cell in sorted(own[own["method"] == method].itertuples(index=False), key=lambda c: column_rank(c.column))]
    permuted = cells[cells["variant"].map(lambda v: _matches(v, PERMUTED_GRAPH_VARIANT)) & (cells["n"] > 0)]
    for cell in sorted(permuted.itertuples(index=False), key=lambda c: column_rank(c.column)):
        real_graph = _real_graph_cell(cells, cell)
        if real_graph is not None:
            pairs.append((real_graph, cell, row_label(cell.method, cell.setting, None),
                          row_label(cell.method, cell.setting, cell.variant)))
    for cell, reference, name, other in pairs:
        if reference is None:
            continue
        difference, spread = cell.mean - reference.mean, _spread(cell, reference)
        if not has_enough_seeds(cell.n, reference.n):
            verdict = None
        elif abs(difference) > spread:
            verdict = f"{name if difference > 0 else other} ahead"
        else:
            verdict = "not resolved"
        rows.append({"comparison": f"{name} − {other}", "dataset": cell.dataset, "column": cell.column,
                     "difference": difference, "interval_95": spread, "n_row": cell.n, "n_reference": reference.n,
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _real_graph_cell(cells: pd.DataFrame, cell):
    """The row a permuted-graph run is held against: the same method on the same graph, unpermuted, of the
    table's own runs (Table 1: X-CLR's row; Table 2: the text-encoder row whose graph was permuted)."""
    candidates = cells[(cells["method"] == cell.method) & (cells["dataset"] == cell.dataset) & (cells["column"] == cell.column)
                       & (cells["n"] > 0) & cells["variant"].map(lambda v: _matches(v, None))
                       & cells["graph"].map(lambda g: _matches(g, cell.graph))
                       & cells["sanity"].map(lambda s: not isinstance(s, str) or s == "none")]
    return next(candidates.itertuples(index=False), None) if len(candidates) == 1 else None


def has_enough_seeds(*counts: int) -> bool:
    """Whether every side of a comparison has the seeds a verdict needs (MIN_SEEDS_FOR_VERDICT)."""
    return all(count >= MIN_SEEDS_FOR_VERDICT for count in counts)


def _verdict(cell, reference, holds: bool) -> bool | None:
    """``holds`` as the check's verdict, or None (untested) when either side has too few seeds."""
    return bool(holds) if has_enough_seeds(cell.n, reference.n) else None


def _spread(cell, reference) -> float:
    """Half-width of the 95% interval of the difference of two means over seeds; nan with one seed.
    It shrinks as seeds are added, so more seeds can resolve a smaller difference; twice the per-run
    standard deviation of the difference, used before, did not (issue 20: 5 seeds could not resolve
    2 points whatever they measured)."""
    if not has_enough_seeds(cell.n, reference.n):
        return math.nan
    return interval_95([(cell.std, cell.n), (reference.std, reference.n)])


def interval_95(sides: list[tuple[float, int]]) -> float:
    """Half-width of the 95% interval of a signed sum of independent means, each given as (standard deviation
    over seeds, seeds): the standard error of the sum times Student's t at the Welch-Satterthwaite degrees of
    freedom (Welch's interval for two sides; a difference of two differences has four)."""
    variances = [(std ** 2 / n, n) for std, n in sides]
    standard_error = math.sqrt(sum(v for v, _ in variances))
    if standard_error == 0:
        return 0.0
    degrees = sum(v for v, _ in variances) ** 2 / sum(v ** 2 / (n - 1) for v, n in variances if v > 0)
    return float(student_t.ppf(0.975, degrees)) * standard_error


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
            "interval_95": _spread(cell, reference), "n_row": cell.n, "n_reference": reference.n, "passes": passes}


def _versions(entry: ReportedNumber | None) -> str | None:
    return ",".join(entry.paper_versions) if entry is not None else None


def claims(runs: pd.DataFrame, table: str, scale: str, reported: list[ReportedNumber], comparable: bool) -> pd.DataFrame:
    """Each claim of `table` evaluated on the table's own runs (variants excluded), completed seeds only:
    a difference as mean(minuend) - mean(subtrahend); an upper bound on a cell (comparable scales only);
    a qualitative ordering of two rows; a gain that shrinks from one dataset to another. A claim whose
    pretraining dataset the paper does not state is evaluated on every dataset that has runs, an ordering
    that names no setting at every setting (Fig. 3's data fractions)."""
    done = completed_runs(runs, table, scale, own_only=True)
    rows = []
    for entry in reported:
        if entry.table != table or entry.kind == "absolute" or (entry.kind == "upper_bound" and not comparable):
            continue
        if entry.kind == "gain_shrinks":
            rows.append(_evaluate_gain_shrinks(entry, done))
            continue
        datasets = [entry.dataset] if entry.dataset else sorted(d for d in done["dataset"].dropna().unique())
        for dataset in datasets or [None]:
            for setting in _claim_settings(entry, done):
                rows.append(_evaluate_claim(entry, done, dataset, setting))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _claim_settings(entry: ReportedNumber, done: pd.DataFrame) -> list[str | None]:
    """The settings a claim is evaluated at: its own, or for an ordering that names none, every setting its
    minuend ran at (one verdict per data fraction of Fig. 3)."""
    if entry.kind != "ordering" or entry.setting or entry.minuend_setting or entry.subtrahend_setting:
        return [entry.setting]
    ran = _select_any_setting(done, entry.minuend)
    return sorted({s for s in ran["setting"] if isinstance(s, str)}) or [None]


def _select_any_setting(done: pd.DataFrame, method: str) -> pd.DataFrame:
    return done[pd.Series([_matches(m, method) for m in done["method"]], index=done.index, dtype=bool)]


def _claim_row(entry: ReportedNumber, claim: str, dataset: str | None, seeds: tuple[int, ...], note: str) -> dict:
    """A claim's row before evaluation; ``seeds``: the completed seeds of each side (one side for a bound)."""
    return {
        "id": entry.id, "kind": entry.kind, "claim": claim, "dataset": dataset, "reported": entry.describe(),
        "paper_version": _versions(entry), "origin": entry.origin, "source": entry.source,
        "reproduced": math.nan, "reproduced_low": math.nan, "reproduced_high": math.nan,
        "n_minuend": seeds[0], "n_subtrahend": seeds[1] if len(seeds) > 1 else None,
        "interval_95": math.nan, "resolved": None, "sign_holds": None, "within_tolerance": None, "note": note,
    }


def claim_seeds(claim) -> tuple[int, ...]:
    """The seed counts of a claim row's sides (an upper bound has one side)."""
    return tuple(int(n) for n in (claim.n_minuend, claim.n_subtrahend) if n is not None and not pd.isna(n))


def _evaluate_claim(entry: ReportedNumber, done: pd.DataFrame, dataset: str | None, setting: str | None) -> dict:
    note = entry.note or ""
    if entry.dataset is None and dataset is not None:
        note = f"{note}; evaluated on {dataset}".lstrip("; ")
    if entry.kind == "upper_bound":
        cell = _select(done, entry.row, dataset, setting)
        row = _claim_row(entry, f"{entry.row}, {entry.column} below the bound", dataset,
                         (_runs_with_values(cell, entry.columns),), note)
        if entry.column in cell and cell[entry.column].notna().any():
            mean = float(cell[entry.column].mean())
            row.update(reproduced=mean, reproduced_low=mean, reproduced_high=mean)
            if has_enough_seeds(row["n_minuend"]):
                row["sign_holds"] = mean < entry.high
        return row
    minuend = _select(done, entry.minuend, dataset, entry.minuend_setting or setting)
    subtrahend = _select(done, entry.subtrahend, dataset, entry.subtrahend_setting or setting)
    measured = [c for c in entry.columns if c in done and minuend[c].notna().any() and subtrahend[c].notna().any()]
    differences = [float(minuend[c].mean() - subtrahend[c].mean()) for c in measured]
    columns = entry.columns[0] if len(entry.columns) == 1 else f"{entry.columns[0].split('.')[0]} ({len(entry.columns)} variants)"
    if entry.kind == "ordering" and setting and not entry.setting:
        note = f"{note}; at {setting}".lstrip("; ")
    row = _claim_row(entry, f"{entry.row_label('minuend')} − {entry.row_label('subtrahend')}, {columns}", dataset,
                     (_runs_with_values(minuend, entry.columns), _runs_with_values(subtrahend, entry.columns)), note)
    if not differences:
        return row
    low, high = min(differences), max(differences)
    row.update(reproduced_low=low, reproduced_high=high)
    if entry.kind in ("difference", "ordering"):
        row["reproduced"] = differences[0]
    if not (entry.known and has_enough_seeds(row["n_minuend"], row["n_subtrahend"])):
        return row
    intervals = [interval_95([_seed_spread(side[column]) for side in (minuend, subtrahend)]) for column in measured]
    row.update(interval_95=max(intervals),
               resolved=_resolved(differences, intervals))
    if entry.kind == "ordering":
        row["sign_holds"] = low > 0 if entry.expect == "above" else low >= 0
        return row
    reported_low = entry.value if entry.kind == "difference" else entry.low
    reported_high = entry.value if entry.kind == "difference" else entry.high
    if reported_low > 0:
        row["sign_holds"] = low > 0
    elif reported_high < 0:
        row["sign_holds"] = high < 0
    row["within_tolerance"] = reported_low - entry.tolerance <= low and high <= reported_high + entry.tolerance
    return row


def _evaluate_gain_shrinks(entry: ReportedNumber, done: pd.DataFrame) -> dict:
    """(minuend - subtrahend on datasets[0]) - (the same on datasets[1]): positive when the gain shrinks."""
    first, second = entry.datasets
    sides = {dataset: (_select(done, entry.minuend, dataset, entry.setting), _select(done, entry.subtrahend, dataset, entry.setting))
             for dataset in entry.datasets}
    column = entry.column
    # n: the fewest seeds of the two methods, per dataset (every one of the four rows needs a spread).
    counts = {dataset: min(_runs_with_values(minuend, entry.columns), _runs_with_values(subtrahend, entry.columns))
              for dataset, (minuend, subtrahend) in sides.items()}
    row = _claim_row(entry, f"({entry.minuend} − {entry.subtrahend} on {first}) − (same on {second}), {column}",
                     f"{first} → {second}", (counts[first], counts[second]), entry.note or "")
    gains = [float(m[column].mean() - s[column].mean()) for m, s in sides.values()
             if column in m and m[column].notna().any() and s[column].notna().any()]
    if len(gains) < 2:
        return row
    shrink = gains[0] - gains[1]
    row.update(reproduced=shrink, reproduced_low=shrink, reproduced_high=shrink)
    if has_enough_seeds(counts[first], counts[second]):
        interval = interval_95([_seed_spread(side[column]) for pair in sides.values() for side in pair])
        row.update(sign_holds=shrink > 0, interval_95=interval, resolved=_resolved([shrink], [interval]))
    return row


def _seed_spread(values: pd.Series) -> tuple[float, int]:
    """(standard deviation over seeds, seeds) of one side of a claim."""
    values = values.dropna()
    return _std(values), len(values)


def _resolved(differences: list[float], intervals: list[float]) -> bool:
    """Whether every difference lies beyond its 95% interval, all on the same side of zero: only then does a
    claim's sign say something about the methods rather than the seeds."""
    beyond = [abs(d) > i for d, i in zip(differences, intervals, strict=True)]
    return all(beyond) and (all(d > 0 for d in differences) or all(d < 0 for d in differences))


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


# result.json metrics.graph_diagnostics (xsample/graph/diagnostics.py), in the order reports show them.
GRAPH_DIAGNOSTIC_FIELDS = ("share_same_class", "share_other_view", "share_rest", "mean_offdiagonal")
GRAPH_DIAGNOSTIC_KEYS = ["method", "setting", "variant", "dataset"]


def graph_diagnostics_table(runs: pd.DataFrame, table: str, scale: str) -> pd.DataFrame:
    """Per table row that records graph diagnostics (X-CLR's target shares, mean graph similarity): their
    means over completed runs, the runs' batch size and n."""
    done = completed_runs(runs, table, scale)
    columns = [f"graph_diagnostics.{field}" for field in GRAPH_DIAGNOSTIC_FIELDS]
    header = [*GRAPH_DIAGNOSTIC_KEYS, "batch_size", *GRAPH_DIAGNOSTIC_FIELDS, "n"]
    if "graph_diagnostics.share_other_view" not in done:
        return pd.DataFrame(columns=header)
    done = done[done["graph_diagnostics.share_other_view"].notna()]
    rows = []
    for key, group in done.groupby([done[k].map(lambda v: v if isinstance(v, str) else "") for k in GRAPH_DIAGNOSTIC_KEYS],
                                   sort=True):
        means = {field: float(group[column].mean()) if column in group and group[column].notna().any() else math.nan
                 for field, column in zip(GRAPH_DIAGNOSTIC_FIELDS, columns, strict=True)}
        labels = {name: value or None for name, value in zip(GRAPH_DIAGNOSTIC_KEYS, key, strict=True)}
        rows.append({**labels, "batch_size": int(group["graph_diagnostics.batch_size"].max()), **means, "n": len(group)})
    return pd.DataFrame(rows, columns=header)


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
