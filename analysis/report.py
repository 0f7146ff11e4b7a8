"""`python -m analysis report SWEEP_DIR`: tables (Markdown, LaTeX, CSV) and figures, reproduced vs reported."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from analysis import figures
from analysis.catalog import row_readings, table_names
from analysis.collect import STATUSES, collect_runs
from analysis.output import write_text_atomic
from analysis.reported import DEFAULT_FILE, QUALITATIVE_KINDS, ReportedNumber, load_reported
from analysis.tables import (
    GRAPH_DIAGNOSTIC_FIELDS,
    MIN_SEEDS_FOR_VERDICT,
    SANITY_TOLERANCE_POINTS,
    claim_seeds,
    claims,
    column_rank,
    compute_table,
    graph_diagnostics_table,
    graph_similarity_table,
    has_enough_seeds,
    known_answer_checks,
    method_comparisons,
    metric_cells,
    row_label,
    table_facts,
)

# What a report says above a table whose scale is not comparable with the paper (scale.comparability).
BANNERS = {"miniature": "Miniature analogs on embedded data: absolute values are not comparable with the paper's; "
                        "only orderings and signs are meaningful.",
           "plumbing": "Dress rehearsal on miniature fixtures: the numbers measure nothing; the report shows that "
                       "the paper-scale path runs end to end."}
FLAG_MD, FLAG_TEX = "⚠", r"\textdagger{}"
# How the report names a fact that is not the paper's own statement (analysis/reported_numbers.yaml `origin`).
ORIGIN_LABELS = {"paper": "", "review": "a review's reading", "third_party": "third-party reading"}
GRAPH_DIAGNOSTICS_EXPLAINED = (
    "X-CLR's target (softmax of graph / graph_temperature, self masked) over the first batches each run trained "
    "on (random batches of the training set for Fig. 5, which trains nothing; xsample/graph/diagnostics.py): its share on the other view of the sample, on same-class samples (other "
    "view included; – without classes) and on the rest, and the mean similarity between distinct samples of a "
    "batch. For scale: the paper profile (the MiniLM ImageNet-1k class-name graph, graph_temperature 0.1, "
    "`python -m xsample.graph paper-profile`) puts 0.34 on same-class samples and 0.04 on the other view at "
    "batch 4096, 0.54 and 0.43 at batch 256.")


def write_report(sweep_dir: Path | str, out_dir: Path | str | None = None, paper_version: str = "v2",
                 reported_file: Path | str = DEFAULT_FILE, scale: str | None = None,
                 runs: pd.DataFrame | None = None, tables: list[str] | None = None) -> list[Path]:
    """Write every table found in the sweep (and its figures); return the paths written.
    Without `out_dir`, each scale goes to paper_figures/<scale>/ under the working directory.
    ``sweep_dir`` may hold several tables' sweeps: the comparison figure then covers all of them.
    ``runs``: the sweep's runs when the caller has already collected them (collecting probes SLURM).
    ``tables``: write only these tables (the others' claims still reach the comparison figure)."""
    runs = collect_runs(sweep_dir) if runs is None else runs
    reported = load_reported(reported_file, paper_version)
    labelled = runs.dropna(subset=["table", "scale"])
    written: list[Path] = []
    for current in sorted(labelled["scale"].unique()) if scale is None else [scale]:
        out = Path(out_dir) if out_dir is not None else Path("paper_figures") / current
        comparison_points = []
        for table in sorted(labelled.loc[labelled["scale"] == current, "table"].unique()):
            wanted = tables is None or table in tables
            if not wanted and table_facts(runs, table, current)[1] != "paper":
                continue  # a miniature adds nothing to the comparison figure (not on the paper's axis)
            report = TableReport(runs, table, current, reported, paper_version)
            if wanted:
                written += report.write(out)
            comparison_points += report.comparison_points()
        written += figures.comparison_figure(comparison_points, current, out)
    return written


def check_outcome_lines(sweep_dir: Path | str, table: str, scale: str, out_dir: Path | str,
                        paper_version: str = "v2") -> list[str]:
    """A few lines for the end of a launch: where the table's report is, and how its known-answer checks
    came out (naming every check that fails)."""
    report = TableReport(collect_runs(sweep_dir), table, scale, load_reported(DEFAULT_FILE, paper_version), paper_version)
    lines = [f"{report.name}, {scale} scale: {Path(out_dir) / report.stem}.md (.tex, .csv and figures beside it)"]
    checks = report.checks
    if checks.empty:
        return lines + ["known-answer checks: none (no baseline or sanity rows completed)"]
    failing = checks[checks["passes"] == False]  # noqa: E712 - None (untested) is neither
    untested = int(checks["passes"].isna().sum())
    passing = len(checks) - len(failing) - untested
    summary = f"known-answer checks: {passing} of {len(checks)} pass, {len(failing)} fail"
    summary += f", {untested} untested (fewer than {MIN_SEEDS_FOR_VERDICT} seeds)" if untested else ""
    return lines + [summary] + [f"  fails: {check}" for check in failing["check"]]


DATASET_ORDER = ("imagenet", "cc3m", "cc12m")


def _dataset_rank(dataset: object) -> tuple[int, str]:
    return (DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER), str(dataset))


def _label(value: object) -> str | None:
    """A row label as text, None for a missing one (None or NaN, as pandas gives it)."""
    return value if isinstance(value, str) and value else None


def _origin(origin: str) -> str:
    return ORIGIN_LABELS[origin]


def _untested(*seeds: int) -> str:
    return f"untested (n={min(seeds)})"


def _number(value: float, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


TEX_REPLACEMENTS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "−": "$-$", "±": r"$\pm$", "Δ": r"$\Delta$", "·": r"$\cdot$",
                    "×": r"$\times$", FLAG_MD: FLAG_TEX}


def _escape_tex(text: str) -> str:
    # One pass, so that the replacements are never escaped again.
    return re.sub("|".join(re.escape(key) for key in TEX_REPLACEMENTS), lambda m: TEX_REPLACEMENTS[m.group()], text)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _latex_table(header: list[str], rows: list[list[str]], caption: str) -> str:
    """booktabs tabular; cells arrive as Markdown-style text and are escaped here."""
    escaped = [[_escape_tex(cell) for cell in row] for row in rows]
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_escape_tex(caption)}}}",
             r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
             " & ".join(_escape_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in escaped]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


class TableReport:
    """One table at one scale: its cells, claims and run status, rendered three ways."""

    def __init__(self, runs: pd.DataFrame, table: str, scale: str, reported: list[ReportedNumber], paper_version: str):
        self.runs, self.table, self.scale, self.paper_version = runs, table, scale, paper_version
        self.reported = [entry for entry in reported if entry.table == table]
        self.layout, comparability = table_facts(runs, table, scale)
        # Scales whose values are not comparable with the paper's: no differences, no flags, a banner.
        self.tiny = comparability != "paper"
        self.banner = BANNERS.get(comparability)
        # Files are named after what they hold: table1_tiny, fig3_tiny, compute_tiny.
        self.stem = f"{'table' if table.isdigit() else ''}{table}_{scale}"
        self.cells = metric_cells(runs, table, scale, self.reported, comparable=not self.tiny) \
            if self.layout in ("metrics", "data_scarcity") else None
        self.claims = claims(runs, table, scale, self.reported, comparable=not self.tiny)
        self.checks = known_answer_checks(self.cells)
        self.comparisons = method_comparisons(self.cells)
        self.graph_diagnostics = graph_diagnostics_table(runs, table, scale)

    @property
    def name(self) -> str:
        return table_names().get(self.table, f"Table {self.table}")

    @property
    def title(self) -> str:
        if self.tiny:
            return f"{self.name}, {self.scale} scale (miniature analog, not comparable with the paper)"
        return f"{self.name}, {self.scale} scale: reproduced vs reported (paper {self.paper_version})"

    # ---- main table ---------------------------------------------------------------------------
    def main_table(self) -> tuple[list[str], list[list[str]], pd.DataFrame, list[str]]:
        """(header, rows of cell texts, CSV frame, notes) of the table proper."""
        if self.layout == "compute":
            return self._compute_table()
        if self.layout == "graph_similarity":
            return self._graph_similarity_table()
        return self._metric_table()

    def _metric_table(self):
        cells = self.cells
        if cells.empty:
            return ["method"], [], cells, ["No completed runs yet."]
        # As in the paper's Table 3: several pretraining datasets are row groups, evaluations the columns.
        several_datasets = cells["dataset"].nunique(dropna=True) > 1
        has_setting = cells["setting"].notna().any()
        # A variant (a config departing from the table's grid) is its own row, labelled with what differs.
        has_variant = cells["variant"].notna().any()
        columns = sorted(dict.fromkeys(cells["column"]), key=column_rank)
        # Columns the paper reports nowhere say so once, in the notes, not in every cell.
        with_paper = {r.column for r in cells.itertuples(index=False) if not math.isnan(r.reported)}
        row_keys = sorted(dict.fromkeys(zip(cells["dataset"], cells["method"], cells["setting"], cells["variant"], strict=True)),
                          key=lambda key: (_dataset_rank(key[0]), str(key[1]), str(key[2]), key[3] is not None, str(key[3])))
        header = (["pretraining"] if several_datasets else []) + ["method"] + (["setting"] if has_setting else [])
        header += (["variant (differs from the table's grid)"] if has_variant else []) + columns
        targets = self._graph_targets()
        header += ["graph target: same class / other view"] if targets else []
        by_key = {(r.dataset, r.method, r.setting, r.variant, r.column): r for r in cells.itertuples(index=False)}
        rows = []
        for dataset, method, setting, variant in row_keys:
            row = ([str(dataset)] if several_datasets else []) + [method] + ([setting if isinstance(setting, str) else ""] if has_setting else [])
            row += [variant if isinstance(variant, str) else "—"] if has_variant else []
            for column in columns:
                cell = by_key.get((dataset, method, setting, variant, column))
                row.append(self._cell_text(cell, column in with_paper) if cell is not None else "")
            if targets:
                row.append(targets.get(tuple(_label(value) for value in (dataset, method, setting, variant)), ""))
            rows.append(row)
        notes = [f"Cell: reproduced mean ± std (n = completed seeds) · gain over the untrained baseline · paper value · "
                 f"Δ reproduced − paper; {FLAG_MD} = |Δ| beyond the entry's tolerance."]
        if self.tiny:
            notes = ["Cell: reproduced mean ± std (n = completed seeds) · gain over the untrained baseline. "
                     f"At {self.scale} scale the values are not comparable with the paper's, which are not shown."]
        if self.table in row_readings():
            notes.append(f"Rows: {row_readings()[self.table]}.")
        without_paper = [column for column in columns if column not in with_paper]
        if without_paper and not self.tiny:
            notes.append(f"Paper value not public for: {', '.join(without_paper)}.")
        if targets:
            notes.append("Graph target: the share of X-CLR's target on same-class samples / on the other view, over the "
                         "first training batches (section Graph diagnostics).")
        return header, rows, cells, notes

    def _cell_text(self, cell, column_has_paper_values: bool) -> str:
        if cell.n == 0:
            parts = ["no runs"]
        elif cell.n == 1:
            parts = [f"{_number(cell.mean)} (n=1)"]
        else:
            parts = [f"{_number(cell.mean)} ± {_number(cell.std)} (n={cell.n})"]
        if not math.isnan(cell.gain_over_untrained):
            parts.append(f"{_number(cell.gain_over_untrained, signed=True)} vs untrained")
        if column_has_paper_values:
            parts.append(f"paper {_number(cell.reported)}" if not math.isnan(cell.reported) else "paper: not public")
        if not math.isnan(cell.diff):
            parts.append(f"Δ {_number(cell.diff, signed=True)}" + (f" {FLAG_MD}" if cell.flag else ""))
        return " · ".join(parts)

    def _compute_table(self):
        frame, settings = compute_table(self.runs, self.table, self.scale)
        reported = {entry.row: entry.describe() for entry in self.reported if entry.kind == "absolute"}
        frame["reported_ratio"] = [reported.get(method, "not public") for method in frame["method"]]
        header = ["method", "step (ms)", "images/s", f"step time vs {settings.get('overhead_against') or '—'}",
                  "peak memory (MB)", "paper"]
        rows = [[r.method, _number(r.step_ms, 2), _number(r.images_per_s, 0), f"{_number(r.ratio, 2)}×",
                 _number(r.peak_mem_mb, 0), r.reported_ratio] for r in frame.itertuples(index=False)]
        notes = ["Paper (Section 4.5): overhead described as minimal; no number is public."]
        if settings:
            notes.append(", ".join(f"{key}: {value}" for key, value in settings.items()))
        return header, rows, frame, notes

    def _graph_similarity_table(self):
        frame = graph_similarity_table(self.runs, self.table, self.scale)
        header = list(frame.columns)
        rows = [[value if isinstance(value, str) else _number(value, 0 if float(value).is_integer() else 3)
                 for value in row.values()] for row in frame.to_dict("records")]
        notes = ["Paper (Fig. 5a): only the plot was published; its statistics are not public."]
        if not self.tiny:  # a miniature's graph is not the paper's
            notes += [f"{entry.setting}, {entry.column.removeprefix('graph_similarity.')}: {entry.describe()} "
                      f"({_origin(entry.origin)}: {entry.source})" for entry in self.reported if entry.kind == "absolute"]
        return header, rows, frame, notes

    # ---- claims ---------------------------------------------------------------------------------
    def claim_rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["claim", "pretraining", "paper", "reproduced", "n (minuend, subtrahend)",
                  "sign holds" if self.tiny else "comparison", "note"]
        rows = []
        for claim in self.claims.itertuples(index=False):
            if math.isnan(claim.reproduced_low):
                reproduced = "no runs"
            elif math.isnan(claim.reproduced):
                reproduced = f"{_number(claim.reproduced_low, signed=True)} to {_number(claim.reproduced_high, signed=True)}"
            else:
                reproduced = _number(claim.reproduced, signed=True)
            source = ", ".join(filter(None, [claim.paper_version, _origin(claim.origin)]))
            rows.append([claim.claim, claim.dataset if isinstance(claim.dataset, str) else "not stated",
                         f"{claim.reported} ({source})", reproduced, ", ".join(map(str, claim_seeds(claim))),
                         self._verdict(claim), claim.note or ""])
        return header, rows

    def _verdict(self, claim) -> str:
        if not math.isnan(claim.reproduced_low) and not has_enough_seeds(*claim_seeds(claim)):
            return _untested(*claim_seeds(claim))
        if claim.resolved is False:  # a sign within the seeds' noise says nothing either way
            return f"not resolved (within ±{_number(claim.interval_95)})"
        if claim.kind in QUALITATIVE_KINDS:
            return {True: "holds: yes", False: f"holds: no, reversed {FLAG_MD}", None: "n/a"}[claim.sign_holds]
        if claim.kind == "upper_bound":
            return {True: "below the bound: yes", False: f"below the bound: no {FLAG_MD}", None: "n/a"}[claim.sign_holds]
        sign = {True: "yes", False: "no", None: "n/a"}[claim.sign_holds]
        if self.tiny:
            return f"sign holds: {sign}"
        within = {True: "yes", False: f"no {FLAG_MD}", None: "n/a"}[claim.within_tolerance]
        return f"within tolerance: {within}; sign holds: {sign}"

    CLAIMS_EXPLAINED = ("Reproduced = mean(minuend) − mean(subtrahend) over completed seeds; for an upper bound, the "
                        "cell's mean; for a shrinking gain, the gain on the first dataset minus the gain on the second. "
                        f"A qualitative claim holds or is reversed ({FLAG_MD}). With fewer than {MIN_SEEDS_FOR_VERDICT} "
                        "seeds on either side a claim says untested; a difference within its 95% interval over seeds "
                        "(Welch) says not resolved.")

    # ---- graph diagnostics ----------------------------------------------------------------------
    def graph_diagnostics_rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["row", "pretraining", "batch", "same class", "other view", "rest", "mean similarity", "n"]
        rows = [[row_label(d.method, d.setting, d.variant), str(d.dataset), str(d.batch_size),
                 *(_number(getattr(d, field), 2) for field in GRAPH_DIAGNOSTIC_FIELDS), str(d.n)]
                for d in self.graph_diagnostics.itertuples(index=False)]
        return header, rows

    def _graph_targets(self) -> dict[tuple, str]:
        """The main table's short form of each row's graph diagnostics, "same class / other view", by
        (dataset, method, setting, variant)."""
        return {tuple(_label(value) for value in (d.dataset, d.method, d.setting, d.variant)):
                f"{_number(d.share_same_class, 2)} / {_number(d.share_other_view, 2)}"
                for d in self.graph_diagnostics.itertuples(index=False)}

    # ---- known-answer checks ----------------------------------------------------------------------
    def check_rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["check", "pretraining", "column", "vs", "difference", "95% interval (±)", "n (row, vs)", "passes"]
        rows = [[check.check, str(check.dataset), check.column, check.reference, _number(check.difference, signed=True),
                 _number(check.interval_95) if not math.isnan(check.interval_95) else "– (one seed)",
                 f"{check.n_row}, {check.n_reference}",
                 {True: "yes", False: "no"}.get(check.passes) or _untested(check.n_row, check.n_reference)]
                for check in self.checks.itertuples(index=False)]
        return header, rows

    CHECKS_EXPLAINED = (f"With fewer than {MIN_SEEDS_FOR_VERDICT} seeds on either side a check says untested: one seed "
                        "has no spread to measure a difference against. "
                        "A trained row passes against a baseline (untrained network, raw pixels), and a supervised row "
                        "against the label-free method (SimCLR, or CLIP for caption data), when it beats it by more "
                        "than the 95% interval of the difference of the means over seeds (Welch: standard error "
                        "times Student's t; it narrows as seeds are added). A sanity row (labels shuffled "
                        "across images, or each sample given another sample's class or caption) passes when it falls "
                        f"to within {SANITY_TOLERANCE_POINTS:g} points of the label-free method or below: a failure "
                        "there means the loss still sees supervision that matches the images. A permuted-graph row "
                        "(X-CLR's text graph with its class or caption rows permuted: same values, wrong pairing) "
                        "passes when the same method's real-graph row beats it by more than that interval: a "
                        "failure there means the graph's values do not reach the result (where the table has them, "
                        "on the agreement of the learned class similarities with the graph and on whether images of "
                        "held-out classes land among their family's seen classes; else on the first column). The random graphs are "
                        "controls: one vector per sample (no semantic edge) passes when it falls to within "
                        f"{SANITY_TOLERANCE_POINTS:g} points of the label-free method or below, one per class (the "
                        "class identity alone) when it stays within as many points of SupCon or above.")

    def comparison_rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["comparison", "pretraining", "column", "difference", "95% interval (±)", "n (row, vs)",
                  "verdict"]
        rows = [[c.comparison, str(c.dataset), c.column, _number(c.difference, signed=True),
                 _number(c.interval_95) if not math.isnan(c.interval_95) else "– (one seed)", f"{c.n_row}, {c.n_reference}",
                 c.verdict if isinstance(c.verdict, str) else _untested(c.n_row, c.n_reference)]
                for c in self.comparisons.itertuples(index=False)]
        return header, rows

    COMPARISONS_EXPLAINED = ("X-CLR against SupCon, and X-CLR on its real graph against the same graph with its "
                             "class rows permuted, on every column, whatever the outcome: a row is ahead when the "
                             "difference exceeds the 95% interval of the difference of the means over seeds; "
                             "otherwise the seeds cannot tell the two apart (not resolved), and the interval column "
                             "says how large a difference they could have resolved.")

    # ---- status ---------------------------------------------------------------------------------
    def status_lines(self) -> list[str]:
        """Runs of this table and scale, plus unlabelled (corrupt) ones that could belong to it."""
        runs = self.runs
        mine = runs[((runs["table"] == self.table) & (runs["scale"] == self.scale)) | runs["table"].isna() | runs["scale"].isna()]
        current = mine[mine["superseded_by"].isna()]
        counts = current["status"].value_counts()
        lines = ["Counts: " + ", ".join(f"{status} {int(counts.get(status, 0))}" for status in STATUSES)]
        for status in ("failed", "stale", "interrupted", "running", "missing", "corrupt"):
            for run in current[current["status"] == status].itertuples(index=False):
                lines.append(f"- {status}: `{run.path}`" + (f": {run.error}" if isinstance(run.error, str) else ""))
        for run in mine[mine["superseded_by"].notna()].itertuples(index=False):
            lines.append(f"- superseded: `{run.path}` by `{run.superseded_by}`")
        return lines

    # ---- output ---------------------------------------------------------------------------------
    def write(self, out: Path) -> list[Path]:
        header, rows, frame, notes = self.main_table()
        claim_header, claim_rows = self.claim_rows()
        written = [
            write_text_atomic(out / f"{self.stem}.md", self._markdown(header, rows, notes, claim_header, claim_rows)),
            write_text_atomic(out / f"{self.stem}.tex", self._latex(header, rows, notes, claim_header, claim_rows)),
            write_text_atomic(out / f"{self.stem}.csv", frame.to_csv(index=False)),
        ]
        if claim_rows:
            written.append(write_text_atomic(out / f"{self.stem}_claims.csv", self.claims.to_csv(index=False)))
        if len(self.checks):
            written.append(write_text_atomic(out / f"{self.stem}_checks.csv", self.checks.to_csv(index=False)))
        if len(self.comparisons):
            written.append(write_text_atomic(out / f"{self.stem}_comparisons.csv", self.comparisons.to_csv(index=False)))
        if len(self.graph_diagnostics):
            written.append(write_text_atomic(out / f"{self.stem}_graph_diagnostics.csv",
                                             self.graph_diagnostics.to_csv(index=False)))
        written += figures.write_table_figures(self.runs, self.table, self.scale, out)
        written += figures.training_curves_figure(self.runs, self.table, self.scale, out, self.stem)
        return written

    def _markdown(self, header, rows, notes, claim_header, claim_rows) -> str:
        parts = [f"# {self.title}", ""]
        if self.tiny:
            parts += [f"> **{self.banner}**", ""]
        parts += [_markdown_table(header, rows), ""] + [f"{note}  " for note in notes] + [""]
        if claim_rows:
            parts += ["## Claims", "", self.CLAIMS_EXPLAINED, "",
                      _markdown_table(claim_header, claim_rows), ""]
        check_header, check_rows = self.check_rows()
        if check_rows:
            parts += ["## Known-answer checks", "", self.CHECKS_EXPLAINED, "", _markdown_table(check_header, check_rows), ""]
        comparison_header, comparison_rows = self.comparison_rows()
        if comparison_rows:
            parts += ["## X-CLR against SupCon and against its permuted graph", "", self.COMPARISONS_EXPLAINED, "",
                      _markdown_table(comparison_header, comparison_rows), ""]
        diagnostics_header, diagnostics_rows = self.graph_diagnostics_rows()
        if diagnostics_rows:
            parts += ["## Graph diagnostics", "", GRAPH_DIAGNOSTICS_EXPLAINED, "",
                      _markdown_table(diagnostics_header, diagnostics_rows), ""]
        parts += ["## Status", ""] + self.status_lines() + [""]
        return "\n".join(parts)

    def _latex(self, header, rows, notes, claim_header, claim_rows) -> str:
        parts = ["% Generated by `python -m analysis report`; regenerate instead of editing."]
        if self.tiny:
            parts.append(f"% {self.banner}")
        caption = ". ".join([self.title] + ([self.banner] if self.tiny else []) + notes)
        parts.append(_latex_table(header, rows, caption))
        if claim_rows:
            parts.append(_latex_table(claim_header, claim_rows, f"{self.title}: claims. {self.CLAIMS_EXPLAINED}"))
        check_header, check_rows = self.check_rows()
        if check_rows:
            parts.append(_latex_table(check_header, check_rows, f"{self.title}: known-answer checks. {self.CHECKS_EXPLAINED}"))
        comparison_header, comparison_rows = self.comparison_rows()
        if comparison_rows:
            parts.append(_latex_table(comparison_header, comparison_rows,
                                      f"{self.title}: X-CLR against SupCon and against its permuted graph. {self.COMPARISONS_EXPLAINED}"))
        diagnostics_header, diagnostics_rows = self.graph_diagnostics_rows()
        if diagnostics_rows:
            parts.append(_latex_table(diagnostics_header, diagnostics_rows,
                                      f"{self.title}: graph diagnostics. {GRAPH_DIAGNOSTICS_EXPLAINED}"))
        return "\n".join(parts) + "\n"

    def comparison_points(self) -> list[dict]:
        """Known paper numbers with a reproduction, for the reproduced-vs-reported figure (comparable scales only:
        a miniature's values are not on the paper's axis)."""
        points = []
        if self.tiny:
            return points
        if self.cells is not None:
            known = self.cells[self.cells["reported"].notna() & (self.cells["n"] > 0)]
            points += [{"label": f"T{self.table} {c.method} {c.column}", "reported": c.reported, "reported_low": c.reported,
                        "reported_high": c.reported, "reproduced_low": c.mean, "reproduced_high": c.mean,
                        "tolerance": c.tolerance} for c in known.itertuples(index=False)]
        by_id = {entry.id: entry for entry in self.reported}
        for claim in self.claims.itertuples(index=False):
            entry = by_id[claim.id]
            if entry.kind in ("difference", "difference_range") and entry.known and not math.isnan(claim.reproduced_low):
                low = entry.value if entry.kind == "difference" else entry.low
                high = entry.value if entry.kind == "difference" else entry.high
                points.append({"label": f"T{self.table} {claim.claim} ({claim.dataset})", "reported": (low + high) / 2,
                               "reported_low": low, "reported_high": high, "reproduced_low": claim.reproduced_low,
                               "reproduced_high": claim.reproduced_high, "tolerance": entry.tolerance})
        return points
