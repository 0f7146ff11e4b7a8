"""`python -m analysis status SWEEP_DIR`: one line per run, counts per status, progress."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.collect import STATUSES, collect_runs


def _label(run) -> str:
    parts = [f"table {run.table}" if isinstance(run.table, str) else "unlabelled"]
    parts += [str(value) for value in (run.scale, run.method, run.dataset, run.setting) if isinstance(value, str)]
    if not pd.isna(run.seed):
        parts.append(f"seed {int(run.seed)}")
    if isinstance(run.variant, str):
        parts.append(f"variant {run.variant}")
    return " ".join(parts)


def status_text(sweep_dir: Path | str, runs: pd.DataFrame | None = None) -> str:
    """``runs``: the sweep's runs when the caller has already collected them (collecting probes SLURM)."""
    runs = collect_runs(sweep_dir) if runs is None else runs
    lines = []
    for run in runs.itertuples(index=False):
        line = f"{run.status:<10} {run.path}  [{_label(run)}]"
        if run.status in ("failed", "stale", "interrupted", "corrupt") and isinstance(run.error, str):
            line += f"  {run.error}"
        if isinstance(run.superseded_by, str):
            line += f"  (superseded by {run.superseded_by}; not counted)"
        lines.append(line)
    current = runs[runs["superseded_by"].isna()]
    counts = current["status"].value_counts()
    lines.append("counts: " + ", ".join(f"{status} {int(counts.get(status, 0))}" for status in STATUSES))
    lines.append(f"progress: {int(counts.get('completed', 0))}/{len(current)} completed")
    if counts.get("stale", 0):
        lines.append(f"stale: {int(counts['stale'])} run(s) stopped without finishing (killed, OOM, lost node); "
                     "relaunching the sweep resumes them from their last checkpoint")
    return "\n".join(lines)
