"""Figures (PNG + PDF, seaborn on the Agg backend): training curves, fig3, fig5, compute overhead,
reproduced vs reported."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on clusters and in tests

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.output import write_atomic  # noqa: E402
from analysis.tables import completed_runs, compute_table, histograms, row_label, table_facts  # noqa: E402

MINIATURE_NOTE = "miniature analog: only orderings and signs are meaningful"


def save_figure(figure: plt.Figure, out: Path, stem: str) -> list[Path]:
    written = [write_atomic(out / f"{stem}.{fmt}", lambda stream, fmt=fmt: figure.savefig(stream, format=fmt, bbox_inches="tight"))
               for fmt in ("png", "pdf")]
    plt.close(figure)
    return written


def _title(text: str, comparability: str) -> str:
    return f"{text}\n({MINIATURE_NOTE})" if comparability == "miniature" else text


def write_table_figures(runs: pd.DataFrame, table: str, scale: str, out: Path) -> list[Path]:
    """The figures of the table's layout (configs/table/*.yaml table.layout), when their data exist."""
    layout, comparability = table_facts(runs, table, scale)
    draw = {"data_scarcity": data_scarcity_figure, "graph_similarity": graph_similarity_figure,
            "compute": compute_figure}.get(layout)
    return draw(runs, table, scale, comparability, out) if draw is not None else []


def training_curves_figure(runs: pd.DataFrame, table: str, scale: str, out: Path, stem: str) -> list[Path]:
    """Training loss against step, one line per table row (method, setting, variant, and dataset when
    several): the mean over completed seeds with a ±1 std band. Written as <stem>_training_curves."""
    done = completed_runs(runs, table, scale).dropna(subset=["loss_curve"])
    if done.empty:
        return []
    several_datasets = done["dataset"].nunique(dropna=True) > 1

    def curve_label(run) -> str:
        return row_label(run.method, run.setting, run.variant) + (f", {run.dataset}" if several_datasets else "")

    data = pd.DataFrame([{"row": curve_label(run), "seed": run.seed, "step": step, "loss": loss}
                         for run in done.itertuples(index=False) for step, loss in run.loss_curve])
    seeds = data.groupby("row")["seed"].nunique()
    # Mean and std per step computed here, not by seaborn's lineplot: its per-point aggregation took about
    # 2 s per table, paid by every launch's report.
    curves = data.groupby(["row", "step"])["loss"].agg(["mean", "std"]).reset_index()
    figure, axes = plt.subplots(figsize=(6, 4))
    for row, curve in curves.groupby("row", sort=True):
        line, = axes.plot(curve["step"], curve["mean"], label=f"{row} (n={seeds[row]})")
        axes.fill_between(curve["step"], curve["mean"] - curve["std"].fillna(0), curve["mean"] + curve["std"].fillna(0),
                          color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set(xlabel="training step", ylabel="training loss",
             title=_title(f"Training curves, {'table ' + table if table.isdigit() else table}: mean ± std over seeds",
                          table_facts(runs, table, scale)[1]))
    axes.legend(fontsize=7, title=None)
    return save_figure(figure, out, f"{stem}_training_curves")


def _fraction(setting: object) -> float:
    """"fraction=0.25" -> 0.25 (NaN for anything else)."""
    try:
        key, _, value = str(setting).partition("=")
        return float(value) if key == "fraction" else math.nan
    except ValueError:
        return math.nan


def _imagenet_stand_in(runs: pd.DataFrame) -> str:
    """The data the "imagenet" protocol ran on, e.g. "fashion_mnist (ImageNet analog)" at tiny scale."""
    used = {name for name in runs["dataset_used"].dropna().unique() if name != "imagenet"}
    return f"{', '.join(sorted(used))} (ImageNet analog)" if used else "ImageNet"


def data_scarcity_figure(runs: pd.DataFrame, table: str, scale: str, comparability: str, out: Path) -> list[Path]:
    done = completed_runs(runs, table, scale, own_only=True)
    if "imagenet.top1" not in done:
        return []
    data = done.assign(fraction=done["setting"].map(_fraction)).dropna(subset=["fraction", "imagenet.top1"])
    if data.empty:
        return []
    figure, axes = plt.subplots(figsize=(5, 3.5))
    sns.lineplot(data=data, x="fraction", y="imagenet.top1", hue="method", errorbar="sd", marker="o", ax=axes)
    axes.set(xlabel="fraction of training data", ylabel=f"{_imagenet_stand_in(data)} top-1 (%)",
             title=_title("Data scarcity (Fig. 3a)", comparability))
    return save_figure(figure, out, f"{table}_{scale}")


def graph_similarity_figure(runs: pd.DataFrame, table: str, scale: str, comparability: str, out: Path) -> list[Path]:
    found = histograms(runs, table, scale)
    if not found:
        return []
    # Rebuild the histograms from the stored counts: one weighted sample per bin centre.
    data = pd.DataFrame([{"graph": h["graph"], "similarity": (low + high) / 2, "count": count}
                         for h in found for low, high, count in zip(h["edges"][:-1], h["edges"][1:], h["counts"], strict=True)])
    edges = found[0]["edges"]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    sns.histplot(data=data, x="similarity", weights="count", hue="graph", bins=edges, stat="density",
                 common_norm=False, element="step", ax=axes)
    axes.set(xlabel="pairwise graph similarity (cosine)", title=_title("Graph similarity distribution (Fig. 5a)", comparability))
    return save_figure(figure, out, f"{table}_{scale}")


def compute_figure(runs: pd.DataFrame, table: str, scale: str, comparability: str, out: Path) -> list[Path]:
    frame, settings = compute_table(runs, table, scale)
    frame = frame.dropna(subset=["step_ms"])
    if frame.empty:
        return []
    figure, axes = plt.subplots(figsize=(5, 3.5))
    sns.barplot(data=frame, x="method", y="step_ms", hue="method", legend=False, ax=axes)
    for position, ratio in enumerate(frame["ratio"]):
        if not math.isnan(ratio):
            axes.annotate(f"{ratio:.2f}× {settings['overhead_against']}", (position, frame["step_ms"].iloc[position]),
                          ha="center", va="bottom", fontsize=8)
    batch = f", batch {settings['batch_size']} per GPU" if settings.get("batch_size") else ""
    axes.set(ylabel="training step (ms)", title=_title(f"Compute per step{batch}", comparability))
    return save_figure(figure, out, f"{table}_{scale}")


def comparison_figure(points: list[dict], scale: str, out: Path) -> list[Path]:
    """Reproduced against reported for every known number with a reproduction; ranges as error bars."""
    if not points:
        return []
    figure, axes = plt.subplots(figsize=(5, 5))
    values = [v for p in points for v in (p["reported_low"], p["reported_high"], p["reproduced_low"], p["reproduced_high"])]
    low, high = min(values + [0.0]) - 2, max(values + [0.0]) + 2
    tolerance = max(p["tolerance"] for p in points)
    line = [low, high]
    axes.plot(line, line, color="black", linewidth=1, label="reproduced = reported")
    axes.fill_between(line, [v - tolerance for v in line], [v + tolerance for v in line], color="grey", alpha=0.2,
                      label=f"±{tolerance:g} pt tolerance")
    palette = sns.color_palette(n_colors=len(points))
    for point, color in zip(points, palette, strict=True):
        x = (point["reported_low"] + point["reported_high"]) / 2
        y = (point["reproduced_low"] + point["reproduced_high"]) / 2
        axes.errorbar(x, y, xerr=(point["reported_high"] - point["reported_low"]) / 2,
                      yerr=(point["reproduced_high"] - point["reproduced_low"]) / 2,
                      fmt="o", color=color, label=point["label"], capsize=3)
    axes.set(xlim=line, ylim=line, xlabel="reported by the paper (pt)", ylabel="reproduced (pt)",
             title="Reproduced vs reported")
    axes.legend(fontsize=6, loc="upper left")
    return save_figure(figure, out, f"reproduced_vs_reported_{scale}")
