"""analysis/: result collection, reported numbers, tables, claims, status and figures on hand-built sweeps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.collect import collect_runs
from analysis.report import write_report
from analysis.reported import ReportedNumbersError, load_all, load_reported
from analysis.status import status_text
from xsample.methods import METHODS

# What configs/ declares and a run records (configs/table/*.yaml table.layout, configs/scale/*.yaml).
LAYOUTS = {"fig3": "data_scarcity", "fig5": "graph_similarity", "compute": "compute"}
COMPARABILITIES = {"tiny": "miniature", "rehearsal": "plumbing", "paper": "paper"}


def write_result(sweep: Path, name: str, *, table: str = "1", method: str = "simclr", dataset: str = "imagenet",
                 setting: str | None = None, seed: int = 0, scale: str = "tiny", status: str = "completed",
                 metrics: dict | None = None, config_hash: str = "hash0", error: str | None = None,
                 mtime: float | None = None, variant: str | None = None, loss_curve: list | None = None,
                 graph: dict | None = None, sanity: str | None = None) -> Path:
    """A result.json as a run writes it; its config holds what the analysis reads from it: the sanity check
    (by default the one a "sanity=..." variant names, as the sweep labels such a run) and the graph."""
    run_dir = sweep / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    if sanity is None:
        sanity = variant.removeprefix("sanity=") if variant and variant.startswith("sanity=") else "none"
    result = {
        "status": status,
        "experiment": {"table": table, "scale": scale, "method": method, "dataset": dataset,
                       "layout": LAYOUTS.get(table, "metrics"), "comparability": COMPARABILITIES[scale],
                       "method_role": METHODS[method].role if method in METHODS else None,
                       "method_targets": METHODS[method].targets if method in METHODS else None,
                       "dataset_used": "fashion_mnist", "setting": setting, "seed": seed, "variant": variant},
        "config": {"sanity": sanity, "graph": graph},
        "metrics": metrics or {}, "config_hash": config_hash, "seed": seed,
    }
    if error:
        result["error"] = error
    if loss_curve is not None:
        result["loss_curve"] = loss_curve
    path = run_dir / "result.json"
    path.write_text(json.dumps(result))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def read_cells(out: Path, stem: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{stem}.csv", keep_default_na=True)


def cell(cells: pd.DataFrame, method: str, column: str, dataset: str = "imagenet") -> pd.Series:
    match = cells[(cells["method"] == method) & (cells["column"] == column) & (cells["dataset"] == dataset)]
    assert len(match) == 1, match
    return match.iloc[0]


@pytest.fixture
def table1_sweep(tmp_path: Path) -> Path:
    """Table 1 (tiny): SimCLR with three seeds, X-CLR with one (and one running), a failed SupCon, a corrupt file,
    a planned run without result."""
    sweep = tmp_path / "table1_tiny"
    for seed, top1 in enumerate([70.0, 72.0, 74.0]):
        write_result(sweep, f"simclr_seed{seed}", seed=seed,
                     metrics={"imagenet": {"top1": top1, "knn_top1": 60.0}, "imagenet_real": {"top1": top1 + 1}})
    write_result(sweep, "xclr_seed0", method="xclr", metrics={"imagenet": {"top1": 75.5}})
    write_result(sweep, "supcon_seed0", method="supcon", status="failed", error="ValueError: loss is nan")
    write_result(sweep, "xclr_seed2", method="xclr", seed=2, status="running")
    corrupt = sweep / "runs" / "broken" / "result.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"status": "compl')
    plan = {"runs": [{"run_dir": str(sweep / "runs" / "xclr_seed1"),
                      "experiment": {"table": "1", "scale": "tiny", "method": "xclr", "dataset": "imagenet",
                                     "setting": None, "seed": 1}}]}
    (sweep / "sweep_plan.json").write_text(json.dumps(plan))
    return sweep


@pytest.fixture
def table3_sweep(tmp_path: Path) -> Path:
    """Table 3 (paper scale): CLIP and X-CLR on CC3M (two seeds each) and CC12M (one seed each)."""
    sweep = tmp_path / "table3_paper"
    values = {  # (method, dataset): [(imagenet, real, imagenet9 original, mixed_rand) per seed]
        ("clip", "cc3m"): [(20.0, 24.0, 40.0, 30.0), (22.0, 26.0, 42.0, 32.0)],
        ("xclr", "cc3m"): [(38.0, 43.0, 44.0, 35.0), (40.0, 44.0, 46.0, 37.0)],
        ("clip", "cc12m"): [(50.0, 55.0, 60.0, 50.0)],
        ("xclr", "cc12m"): [(50.5, 55.4, 64.0, 55.0)],
    }
    for (method, dataset), seeds in values.items():
        for seed, (top1, real, original, mixed_rand) in enumerate(seeds):
            write_result(sweep, f"{method}_{dataset}_seed{seed}", table="3", method=method, dataset=dataset, seed=seed,
                         scale="paper", metrics={"imagenet": {"top1": top1}, "imagenet_real": {"top1": real},
                                                 "imagenet9": {"original": original, "mixed_rand": mixed_rand}})
    return sweep


def test_reported_numbers_file_is_valid_and_versioned():
    entries = load_all()
    assert len({entry.id for entry in entries}) < len(entries)  # some ids carry one value per version
    v2 = {entry.id: entry for entry in load_reported(paper_version="v2")}
    v1 = {entry.id: entry for entry in load_reported(paper_version="v1")}
    workshop = {entry.id: entry for entry in load_reported(paper_version="workshop")}
    assert v2["table1-simclr-imagenet"].value == 63.4
    assert v2["table1-supcon-imagenet"].value == 74.3
    assert v2["table3-cc3m-xclr-minus-clip-imagenet"].value == 17.2
    assert v1["table3-cc3m-xclr-minus-clip-imagenet"].value == 16.8
    assert workshop["table3-cc3m-xclr-minus-clip-imagenet"].value == 22.5
    assert v1["table3-cc12m-xclr-minus-clip-imagenet"].value == v2["table3-cc12m-xclr-minus-clip-imagenet"].value == 0.6
    assert (v2["table3-xclr-minus-clip-imagenet9"].low, v2["table3-xclr-minus-clip-imagenet9"].high) == (3.3, 5.6)
    assert v2["table3-xclr-minus-clip-imagenet9"].dataset is None  # not stated by the paper
    assert v2["table1-xclr-imagenet"].value is None
    assert v2["table1-xclr-imagenet"].describe() == "not public"


@pytest.mark.parametrize(("replace", "by", "message"), [
    ("value: 63.4", "value: sixty", "entry 0 (table1-simclr-imagenet): field 'value' must be a number or null"),
    ("kind: absolute", "kind: ratio", "entry 0 (table1-simclr-imagenet): field 'kind' must be one of"),
    ("paper_version: v2", "paper_version: v3", "entry 0 (table1-simclr-imagenet): field 'paper_version'"),
    ("column: imagenet.top1", "column: top1", "entry 0 (table1-simclr-imagenet): field 'column'"),
])
def test_malformed_reported_numbers_name_entry_and_field(tmp_path, replace, by, message):
    entry = """entries:
  - id: table1-simclr-imagenet
    table: "1"
    kind: absolute
    row: simclr
    dataset: imagenet
    column: imagenet.top1
    value: 63.4
    paper_version: v2
    source: review
"""
    path = tmp_path / "reported_numbers.yaml"
    path.write_text(entry.replace(replace, by))
    with pytest.raises(ReportedNumbersError, match="reported_numbers.yaml " + message.replace("(", r"\(").replace(")", r"\)")):
        load_all(path)


def test_collect_marks_failed_corrupt_and_missing_runs(table1_sweep):
    runs = collect_runs(table1_sweep)
    by_path = runs.set_index("path")
    assert by_path.loc["runs/supcon_seed0", "status"] == "failed"
    assert by_path.loc["runs/supcon_seed0", "error"] == "ValueError: loss is nan"
    assert by_path.loc["runs/broken", "status"] == "corrupt"
    assert "JSONDecodeError" in by_path.loc["runs/broken", "error"]
    assert by_path.loc["runs/xclr_seed1", "status"] == "missing"
    assert by_path.loc["runs/xclr_seed1", "method"] == "xclr"
    assert by_path.loc["runs/simclr_seed2", "imagenet.top1"] == 74.0


def test_collect_keeps_the_newest_of_duplicate_runs(tmp_path):
    sweep = tmp_path / "sweep"
    write_result(sweep, "old", metrics={"imagenet": {"top1": 10.0}}, config_hash="a", mtime=1_000)
    write_result(sweep, "new", metrics={"imagenet": {"top1": 20.0}}, config_hash="b", mtime=2_000)
    runs = collect_runs(sweep).set_index("path")
    assert pd.isna(runs.loc["runs/new", "superseded_by"])
    assert runs.loc["runs/old", "superseded_by"] == "runs/new (config hash differs)"
    out = tmp_path / "out"
    write_report(sweep, out)
    assert cell(read_cells(out, "table1_tiny"), "simclr", "imagenet.top1")["mean"] == 20.0


def test_table1_report_cells_status_and_figures(table1_sweep, tmp_path):
    out = tmp_path / "out"
    written = write_report(table1_sweep, out)
    assert {p.name for p in written} >= {"table1_tiny.md", "table1_tiny.tex", "table1_tiny.csv"}
    cells = read_cells(out, "table1_tiny")
    simclr = cell(cells, "simclr", "imagenet.top1")
    assert (simclr["mean"], simclr["std"], simclr["n"]) == (72.0, 2.0, 3)
    # Tiny scale measures other data: its cells are never set against the paper's values (63.4 for SimCLR).
    assert pd.isna(simclr["reported"]) and pd.isna(simclr["diff"]) and not simclr["flag"]
    assert cells[cells["method"] == "supcon"].empty  # the failed run does not count, and no paper cell is listed
    xclr = cell(cells, "xclr", "imagenet.top1")
    assert (xclr["mean"], xclr["n"]) == (75.5, 1) and pd.isna(xclr["std"]) and pd.isna(xclr["reported"])
    assert cell(cells, "simclr", "imagenet_real.top1")["mean"] == 73.0

    markdown = (out / "table1_tiny.md").read_text()
    assert "Miniature analogs on embedded data" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert "| 72.0 ± 2.0 (n=3) |" in markdown and not any("paper" in line for line in table_rows)
    assert markdown.startswith("# Table 1, tiny scale (miniature analog, not comparable with the paper)")
    assert "failed: `runs/supcon_seed0`: ValueError: loss is nan" in markdown
    assert "corrupt: `runs/broken`" in markdown
    assert "missing: `runs/xclr_seed1`" in markdown
    assert "running: `runs/xclr_seed2`" in markdown
    assert "Counts: completed 4, running 1, stale 0, failed 1, missing 1, corrupt 1" in markdown
    tex = (out / "table1_tiny.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"imagenet\_real.top1" in tex
    assert r"$\pm$" in tex and r"$\cdot$" in tex
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


def test_training_curves_figure_from_the_result_loss_curves(tmp_path):
    sweep = tmp_path / "table1_tiny"
    for seed in range(2):
        write_result(sweep, f"simclr_seed{seed}", seed=seed, loss_curve=[[1, 6.0 + seed], [2, 5.0 + seed], [3, 4.5]])
    write_result(sweep, "xclr_seed0", method="xclr", loss_curve=[[1, 7.0], [2, 6.0], [3, 5.5]])
    write_result(sweep, "supcon_seed0", method="supcon")  # an older result.json without a curve
    write_result(sweep, "xclr_seed1", method="xclr", seed=1, status="running", loss_curve=[[1, "nan?"]])

    runs = collect_runs(sweep).set_index("path")
    assert runs.at["runs/simclr_seed1", "loss_curve"] == [(1, 7.0), (2, 6.0), (3, 4.5)]
    assert runs.at["runs/supcon_seed0", "loss_curve"] is None and runs.at["runs/xclr_seed1", "loss_curve"] is None
    written = write_report(sweep, tmp_path / "out")
    assert {"table1_tiny_training_curves.png", "table1_tiny_training_curves.pdf"} <= {p.name for p in written}
    assert (tmp_path / "out" / "table1_tiny_training_curves.png").stat().st_size > 1000


def test_paper_scale_flags_cells_beyond_tolerance(tmp_path):
    sweep = tmp_path / "sweep"
    write_result(sweep, "simclr", scale="paper", metrics={"imagenet": {"top1": 63.9}})
    write_result(sweep, "supcon", scale="paper", method="supcon", metrics={"imagenet": {"top1": 70.0}})
    out = tmp_path / "out"
    write_report(sweep, out)
    cells = read_cells(out, "table1_paper")
    simclr, supcon = cell(cells, "simclr", "imagenet.top1"), cell(cells, "supcon", "imagenet.top1")
    assert simclr["diff"] == pytest.approx(0.5) and not simclr["flag"]
    assert supcon["diff"] == pytest.approx(-4.3) and supcon["flag"]
    assert "Δ -4.3 ⚠" in (out / "table1_paper.md").read_text()
    assert r"\textdagger" in (out / "table1_paper.tex").read_text()


def test_table3_claims_are_evaluated_from_runs(table3_sweep, tmp_path):
    out = tmp_path / "out"
    write_report(table3_sweep, out)
    cells = read_cells(out, "table3_paper")
    assert cell(cells, "xclr", "imagenet.top1", dataset="cc3m")["mean"] == 39.0
    claims = pd.read_csv(out / "table3_paper_claims.csv").set_index(["id", "dataset"])
    cc3m = claims.loc[("table3-cc3m-xclr-minus-clip-imagenet", "cc3m")]
    assert cc3m["reproduced"] == pytest.approx(39.0 - 21.0)
    assert cc3m["reported"] == "+17.2"
    assert bool(cc3m["sign_holds"]) and bool(cc3m["within_tolerance"])  # 18.0 vs 17.2, tolerance 1.0
    real = claims.loc[("table3-cc3m-xclr-minus-clip-imagenet-real", "cc3m")]
    assert real["reproduced"] == pytest.approx(43.5 - 25.0) and bool(real["within_tolerance"])  # 18.5 vs 18.0
    cc12m = claims.loc[("table3-cc12m-xclr-minus-clip-imagenet", "cc12m")]
    assert cc12m["reproduced"] == pytest.approx(0.5) and cc12m["reported"] == "+0.6"
    # One seed per side: the difference is shown, but no verdict is drawn from it.
    assert pd.isna(cc12m["sign_holds"]) and pd.isna(cc12m["within_tolerance"])
    # ImageNet-9: the paper does not say which pretraining data, so both are evaluated (range over variants).
    in9_cc3m = claims.loc[("table3-xclr-minus-clip-imagenet9", "cc3m")]
    assert (in9_cc3m["reproduced_low"], in9_cc3m["reproduced_high"]) == (4.0, 5.0)
    assert bool(in9_cc3m["within_tolerance"])
    in9_cc12m = claims.loc[("table3-xclr-minus-clip-imagenet9", "cc12m")]
    assert (in9_cc12m["reproduced_low"], in9_cc12m["reproduced_high"]) == (4.0, 5.0)
    markdown = (out / "table3_paper.md").read_text()
    assert "## Claims" in markdown and "+17.2 (v2)" in markdown
    cc12m_line = next(line for line in markdown.splitlines() if "+0.6 (v1,v2)" in line and "| cc12m |" in line)
    assert "untested (n=1)" in cc12m_line and "yes" not in cc12m_line
    assert (out / "reproduced_vs_reported_paper.png").exists()


def test_claims_use_the_requested_paper_version(table3_sweep, tmp_path):
    out = tmp_path / "out"
    write_report(table3_sweep, out, paper_version="v1")
    claims = pd.read_csv(out / "table3_paper_claims.csv").set_index(["id", "dataset"])
    assert claims.loc[("table3-cc3m-xclr-minus-clip-imagenet", "cc3m"), "reported"] == "+16.8"


def test_tiny_claims_report_sign_only(table3_sweep, tmp_path):
    for result in table3_sweep.rglob("result.json"):  # relabel as a tiny analog
        result.write_text(result.read_text().replace('"scale": "paper"', '"scale": "tiny"')
                          .replace('"comparability": "paper"', '"comparability": "miniature"'))
    out = tmp_path / "out"
    write_report(table3_sweep, out)
    markdown = (out / "table3_tiny.md").read_text()
    assert "sign holds: yes" in markdown and "within tolerance" not in markdown


def test_compute_fig3_and_fig5_tables_and_figures(tmp_path):
    sweep = tmp_path / "sweep"
    compute = {method: {"step_ms": step, "images_per_s": 256_000 / step, "peak_mem_mb": None}
               for method, step in {"simclr": 10.0, "supcon": 10.5, "xclr": 11.0, "clip": 12.0}.items()}
    compute.update(xclr_over_simclr=1.1, overhead_against="simclr", batch_size=256, backbone="resnet_tiny", graph_precompute_s=0.5,
                   graph_precompute_samples=6000)
    write_result(sweep, "compute", table="compute", method="all", metrics={"compute": compute})
    for method, base in {"simclr": 50.0, "supcon": 60.0, "xclr": 58.0}.items():
        for fraction in (0.25, 1.0):
            for seed in (0, 1):
                write_result(sweep, f"fig3_{method}_{fraction}_{seed}", table="fig3", method=method,
                             setting=f"fraction={fraction}", seed=seed,
                             metrics={"imagenet": {"top1": base + 10 * fraction + seed}})
    for graph, mean in {"class_names": 0.3, "captions": 0.2}.items():
        similarity = {"pairs": 45, "mean": mean, "std": 0.1, "quantiles": {"q01": 0.0, "q99": 0.6},
                      "fraction_above": {"0.5": 0.1}, "num_nodes": 10, "graph": graph,
                      "histogram": {"edges": [0.0, 0.25, 0.5, 0.75, 1.0], "counts": [5, 20, 15, 5]}}
        write_result(sweep, f"fig5_{graph}", table="fig5", method="none", setting=f"fig5_{graph}",
                     metrics={"graph_similarity": similarity})
    out = tmp_path / "out"
    write_report(sweep, out)

    compute_rows = pd.read_csv(out / "compute_tiny.csv").set_index("method")
    assert compute_rows.loc["xclr", "ratio"] == pytest.approx(1.1)
    assert compute_rows.loc["xclr", "reported_ratio"] == "not public"
    fig3 = read_cells(out, "fig3_tiny")
    quarter = fig3[(fig3["method"] == "supcon") & (fig3["setting"] == "fraction=0.25")].iloc[0]
    assert (quarter["mean"], quarter["n"]) == (63.0, 2)
    fig5 = pd.read_csv(out / "fig5_tiny.csv").set_index("setting")
    assert fig5.loc["fig5_class_names", "mean"] == pytest.approx(0.3)
    assert fig5.loc["fig5_captions", "quantiles.q99"] == pytest.approx(0.6)
    for stem in ("fig3_tiny", "fig5_tiny", "compute_tiny"):
        for suffix in (".png", ".pdf"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0


def test_status_command_lists_runs_and_progress(table1_sweep, capsys):
    text = status_text(table1_sweep)
    assert "failed     runs/supcon_seed0" in text and "ValueError: loss is nan" in text
    assert "corrupt    runs/broken" in text
    assert "missing    runs/xclr_seed1" in text
    assert "running    runs/xclr_seed2" in text
    assert "progress: 4/8 completed" in text
    assert main(["status", str(table1_sweep)]) == 0
    assert "progress: 4/8 completed" in capsys.readouterr().out


def test_cli_report_prints_paths_and_rejects_missing_sweep(table1_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(table1_sweep), "--out", str(out)]) == 0
    assert str(out / "table1_tiny.md") in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_report_defaults_to_paper_figures_scale_dir(table1_sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(table1_sweep)]) == 0
    assert (tmp_path / "paper_figures" / "tiny" / "table1_tiny.csv").exists()


def test_a_sweeps_root_with_several_tables_keeps_their_plans_apart(tmp_path):
    """Run names repeat across tables (xclr_imagenet_seed0): each plan only matches runs of its own sweep."""
    for table in ("1", "fig3"):
        sweep = tmp_path / f"table{table}_tiny"
        write_result(sweep, "xclr_imagenet_seed0", table=table, method="xclr", metrics={"imagenet": {"top1": 50.0}})
        planned = ["xclr_imagenet_seed0"] + (["simclr_imagenet_seed0"] if table == "fig3" else [])
        plan = {"runs": [{"run_dir": f"runs/{name}",
                          "experiment": {"table": table, "scale": "tiny", "method": name.split("_")[0],
                                         "dataset": "imagenet", "setting": None, "seed": 0}} for name in planned]}
        (sweep / "sweep_plan.json").write_text(json.dumps(plan))
    runs = collect_runs(tmp_path)
    assert sorted(zip(runs["table"], runs["method"], runs["status"], strict=True)) == [
        ("1", "xclr", "completed"), ("fig3", "simclr", "missing"), ("fig3", "xclr", "completed")]
    written = write_report(tmp_path, tmp_path / "out", scale="tiny")
    assert {p.name for p in written} >= {"table1_tiny.md", "fig3_tiny.md"}


def test_variants_are_their_own_rows_and_never_supersede_the_tables_runs(tmp_path):
    sweep = tmp_path / "table1_tiny"
    for seed in (0, 1):
        write_result(sweep, f"xclr_imagenet_seed{seed}", method="xclr", seed=seed, metrics={"imagenet": {"top1": 70.0}})
        write_result(sweep, f"xclr_imagenet_seed{seed}+method.temperature=0.2", method="xclr", seed=seed,
                     variant="method.temperature=0.2", config_hash="other", metrics={"imagenet": {"top1": 60.0}})
    runs = collect_runs(sweep)
    assert runs["superseded_by"].isna().all()
    out = tmp_path / "out"
    write_report(sweep, out)
    cells = read_cells(out, "table1_tiny")
    top1 = cells[cells["column"] == "imagenet.top1"]
    assert dict(zip(top1["variant"].fillna("—"), top1["mean"], strict=True)) == {"—": 70.0, "method.temperature=0.2": 60.0}
    report = (out / "table1_tiny.md").read_text()
    assert "| xclr | method.temperature=0.2 | 60.0 ± 0.0 (n=2)" in report and "| xclr | — | 70.0 ± 0.0 (n=2)" in report
    assert "variant method.temperature=0.2" in status_text(sweep)


def test_a_sweep_whose_runs_all_failed_reports_them_without_crashing(tmp_path, capsys):
    """Issue 13, scenario 2 on main: every run failed, then the report crashed (pandas 3 StringArray &)."""
    sweep = tmp_path / "table1_paper"
    for method in ("simclr", "supcon", "xclr"):
        write_result(sweep, f"{method}_imagenet_seed0", method=method, scale="paper", status="failed",
                     error="FileNotFoundError: dataset imagenet: no root is set.")
    old = sweep / "runs" / "old_schema" / "result.json"  # an earlier harness: no variant, no config hash
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"status": "completed", "experiment": {"table": 1, "scale": "paper", "method": "simclr",
                                                                     "dataset": "imagenet", "seed": "zero"},
                               "metrics": {"imagenet": {"top1": 70.0}}}))
    out = tmp_path / "out"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    report = (out / "table1_paper.md").read_text()
    assert "Counts: completed 1, running 0, stale 0, failed 3" in report
    assert "- failed: `runs/xclr_imagenet_seed0`: FileNotFoundError" in report
    assert main(["status", str(sweep)]) == 0


def test_nothing_readable_is_the_only_failing_report(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    corrupt = sweep / "runs" / "broken" / "result.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("{")
    assert main(["report", str(sweep), "--out", str(tmp_path / "out")]) == 1
    assert main(["status", str(sweep)]) == 1
    assert "corrupt    runs/broken" in capsys.readouterr().out
