"""The registry's bounds, qualitative claims and third-party readings, and the graph diagnostics in reports."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.report import write_report
from analysis.reported import ReportedNumbersError, load_all, load_reported
from tests.test_analysis import write_result


def test_the_registry_holds_the_public_facts_with_their_kind_and_origin():
    v2 = {entry.id: entry for entry in load_reported(paper_version="v2")}
    bound = v2["table1-xclr-imagenet-below-supcon-original"]
    assert (bound.kind, bound.high, bound.origin, bound.describe()) == ("upper_bound", 78.7, "review", "< 78.7")
    assert v2["table2-minilm-above-mpnet"].describe() == "xclr (minilm) > xclr (mpnet)"
    assert v2["fig3a-supcon-at-least-xclr"].describe() == "supcon ≥ xclr"
    shrinks = v2["table3-gain-shrinks-cc3m-to-cc12m-imagenet"]
    assert (shrinks.datasets, shrinks.value) == (("cc3m", "cc12m"), 16.6)
    graph_mean = v2["fig5-class-names-mean-similarity"]
    assert (graph_mean.origin, graph_mean.describe()) == ("third_party", "0.35")
    assert {entry.origin for entry in load_all()} == {"paper", "review", "third_party"}


@pytest.mark.parametrize("fields, message", [
    ("kind: ordering\n    minuend: xclr\n    subtrahend: supcon\n    expect: higher",
     "field 'expect' must be one of above, at_least"),
    ("kind: gain_shrinks\n    minuend: xclr\n    subtrahend: clip\n    datasets: [cc3m]",
     "field 'datasets' must list two pretraining datasets"),
    ("kind: upper_bound\n    row: xclr", "field 'high' must be the bound"),
    ("kind: absolute\n    row: xclr\n    value: 1.0\n    origin: blog", "field 'origin' must be one of paper, review"),
])
def test_malformed_facts_name_entry_and_field(tmp_path, fields, message):
    path = tmp_path / "reported_numbers.yaml"
    path.write_text(f"""entries:
  - id: fact
    table: "1"
    {fields}
    dataset: imagenet
    column: imagenet.top1
    paper_version: v2
    source: review
""")
    with pytest.raises(ReportedNumbersError, match=f"entry 0 \\(fact\\): {message}"):
        load_all(path)


def _claims(out, stem: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{stem}_claims.csv")


def test_upper_bound_is_judged_at_paper_scale_with_two_seeds_only(tmp_path):
    for scale, seeds in (("paper", (0, 1)), ("tiny", (0, 1))):
        for seed in seeds:
            write_result(tmp_path / f"table1_{scale}", f"xclr_seed{seed}", method="xclr", seed=seed, scale=scale,
                         metrics={"imagenet": {"top1": 75.0 + seed}})
    write_result(tmp_path / "one_seed", "xclr_seed0", method="xclr", scale="paper", metrics={"imagenet": {"top1": 80.0}})
    for sweep in ("table1_paper", "table1_tiny", "one_seed"):
        write_report(tmp_path / sweep, tmp_path / sweep / "out")
    paper = _claims(tmp_path / "table1_paper" / "out", "table1_paper").set_index("id")
    bound = paper.loc["table1-xclr-imagenet-below-supcon-original"]
    assert bound["reproduced"] == 75.5 and bool(bound["sign_holds"])
    markdown = (tmp_path / "table1_paper" / "out" / "table1_paper.md").read_text()
    assert "< 78.7 (v2, a review's reading)" in markdown and "below the bound: yes" in markdown
    assert "untested (n=1)" in (tmp_path / "one_seed" / "out" / "table1_paper.md").read_text()
    assert not (tmp_path / "table1_tiny" / "out" / "table1_tiny_claims.csv").exists(), "a miniature has no bound"


def _table3(sweep, gains: dict[str, float], scale: str = "tiny") -> None:
    for dataset, gain in gains.items():
        for seed in (0, 1):
            for method, top1 in (("clip", 50.0 + seed), ("xclr", 50.0 + gain + seed)):
                write_result(sweep, f"{method}_{dataset}_{seed}", table="3", method=method, dataset=dataset, seed=seed,
                             scale=scale, metrics={"imagenet": {"top1": top1}})


def test_a_gain_that_grows_with_data_is_flagged_as_reversed(tmp_path):
    _table3(tmp_path / "shrinks" / "table3_tiny", {"cc3m": 10.0, "cc12m": 1.0})
    _table3(tmp_path / "grows" / "table3_tiny", {"cc3m": 1.0, "cc12m": 4.0})
    verdicts = {}
    for case in ("shrinks", "grows"):
        write_report(tmp_path / case, tmp_path / case / "out")
        claims = _claims(tmp_path / case / "out", "table3_tiny").set_index("id")
        verdicts[case] = claims.loc["table3-gain-shrinks-cc3m-to-cc12m-imagenet"]
    assert verdicts["shrinks"]["reproduced"] == pytest.approx(9.0) and bool(verdicts["shrinks"]["sign_holds"])
    assert verdicts["grows"]["reproduced"] == pytest.approx(-3.0) and not verdicts["grows"]["sign_holds"]
    # Four rows of two seeds each, 1 point apart: the shrink's interval is ±2.8 (Welch, 4 degrees of freedom).
    assert {case: round(v["interval_95"], 1) for case, v in verdicts.items()} == {"shrinks": 2.8, "grows": 2.8}
    assert bool(verdicts["shrinks"]["resolved"]) and bool(verdicts["grows"]["resolved"])
    assert "holds: no, reversed ⚠" in (tmp_path / "grows" / "out" / "table3_tiny.md").read_text()


def test_orderings_compare_two_rows_of_one_method_and_every_fraction(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        for setting, top1 in (("minilm", 70.0), ("mpnet", 68.0)):
            write_result(sweep, f"t2_{setting}_{seed}", table="2", method="xclr", setting=setting, seed=seed,
                         scale="paper", metrics={"imagenet": {"top1": top1 + seed}})
        for fraction, (supcon, xclr) in {"fraction=0.1": (60.0, 61.0), "fraction=1.0": (80.0, 79.0)}.items():
            for method, top1 in (("supcon", supcon), ("xclr", xclr)):
                write_result(sweep, f"f3_{method}_{fraction}_{seed}", table="fig3", method=method, setting=fraction,
                             seed=seed, metrics={"imagenet": {"top1": top1 + seed}})
    write_report(sweep, tmp_path / "out", scale="paper")
    write_report(sweep, tmp_path / "out", scale="tiny")
    table2 = _claims(tmp_path / "out", "table2_paper").set_index("id")
    assert table2.loc["table2-minilm-above-mpnet", "reproduced"] == pytest.approx(2.0)
    assert bool(table2.loc["table2-minilm-above-mpnet", "sign_holds"])
    assert table2.loc["table2-minilm-above-open-clip-text", "n_subtrahend"] == 0, "no open_clip_text row ran"
    fig3 = _claims(tmp_path / "out", "fig3_tiny")
    verdicts = {note.rsplit("; at ", 1)[1]: holds for note, holds in zip(fig3["note"], fig3["sign_holds"], strict=True)}
    assert verdicts == {"fraction=0.1": False, "fraction=1.0": True}, "one verdict per data fraction"
    # Each sign is 1 point against seeds 1 point apart: Welch's interval (±3.0 at n=2) cannot tell.
    assert not fig3["resolved"].any() and fig3["interval_95"].round(1).eq(3.0).all()
    markdown = (tmp_path / "out" / "fig3_tiny.md").read_text()
    assert markdown.count("not resolved (within ±3.0)") == 2 and "holds: no, reversed" not in markdown


def _fig5(sweep, scale: str) -> None:
    similarity = {"mean": 0.345, "std": 0.1, "num_nodes": 1000, "pairs": 499500, "graph": "class_names"}
    diagnostics = {"mean_offdiagonal": 0.35, "share_other_view": 0.04, "share_same_class": 0.34, "share_rest": 0.66,
                   "batches": 8, "batch_size": 4096, "graph_temperature": 0.1}
    write_result(sweep, "fig5_class_names", table="fig5", method="none", setting="fig5_class_names", scale=scale,
                 metrics={"graph_similarity": similarity, "graph_diagnostics": diagnostics})


def test_fig5_shows_the_third_party_graph_mean_at_paper_scale_only(tmp_path):
    for scale in ("paper", "tiny"):
        _fig5(tmp_path / "sweep" / f"fig5_{scale}", scale)
    write_report(tmp_path / "sweep", tmp_path / "out", scale="paper")
    write_report(tmp_path / "sweep", tmp_path / "out", scale="tiny")
    paper, tiny = ((tmp_path / "out" / f"fig5_{scale}.md").read_text() for scale in ("paper", "tiny"))
    assert "fig5_class_names, mean: 0.35 (third-party reading: a third-party reproduction's reading" in paper
    assert "third-party" not in tiny
    assert "| none (fig5_class_names) | imagenet | 4096 | 0.34 | 0.04 | 0.66 | 0.35 | 1 |" in paper


def test_graph_diagnostics_sit_next_to_their_rows(tmp_path):
    sweep = tmp_path / "table2_tiny"
    for seed, same_class in ((0, 0.90), (1, 0.94)):
        write_result(sweep, f"xclr_{seed}", table="2", method="xclr", setting="minilm", seed=seed,
                     metrics={"imagenet": {"top1": 86.0},
                              "graph_diagnostics": {"mean_offdiagonal": 0.5, "share_other_view": 0.08,
                                                    "share_same_class": same_class, "share_rest": 1 - same_class,
                                                    "batches": 8, "batch_size": 64, "graph_temperature": 0.1}})
        write_result(sweep, f"supcon_{seed}", table="2", method="supcon", setting="true_class", seed=seed,
                     metrics={"imagenet": {"top1": 86.0}})
    write_report(sweep, tmp_path / "out")
    markdown = (tmp_path / "out" / "table2_tiny.md").read_text()
    xclr_line = next(line for line in markdown.splitlines() if line.startswith("| xclr | minilm"))
    assert xclr_line.endswith("| 0.92 / 0.08 |")
    assert next(line for line in markdown.splitlines() if line.startswith("| supcon")).endswith("|  |")
    assert "## Graph diagnostics" in markdown and "| xclr (minilm) | imagenet | 64 | 0.92 | 0.08 | 0.08 | 0.50 | 2 |" in markdown
    table = pd.read_csv(tmp_path / "out" / "table2_tiny_graph_diagnostics.csv")
    assert table["share_same_class"].tolist() == [pytest.approx(0.92)]


def test_a_permuted_graph_run_must_fall_below_the_real_graph(tmp_path):
    """Its class identity survives the permutation, so it is held against X-CLR's real graph, not SimCLR."""
    for case, permuted in (("values_matter", [70.0, 71.0, 72.0]), ("values_ignored", [79.0, 80.0, 81.0])):
        sweep = tmp_path / case / "table1_tiny"
        for seed in range(3):
            write_result(sweep, f"simclr_{seed}", method="simclr", seed=seed, metrics={"imagenet": {"top1": 60.0 + seed}})
            write_result(sweep, f"xclr_{seed}", method="xclr", seed=seed, metrics={"imagenet": {"top1": 79.0 + seed}})
            write_result(sweep, f"xclr_permuted_{seed}", method="xclr", seed=seed, variant="sanity=permuted_graph",
                         metrics={"imagenet": {"top1": permuted[seed]}})
        write_report(sweep, sweep.parent / "out")
    verdicts = {case: pd.read_csv(tmp_path / case / "out" / "table1_tiny_checks.csv").set_index("check").loc[
        "xclr [sanity=permuted_graph] falls below the real graph"] for case in ("values_matter", "values_ignored")}
    assert verdicts["values_matter"]["reference"] == "xclr" and verdicts["values_matter"]["difference"] == -9.0
    assert bool(verdicts["values_matter"]["passes"]) and not verdicts["values_ignored"]["passes"]


MINILM = {"source": "class_names", "encoder": "all-MiniLM-L6-v2"}
RANDOM_PER_SAMPLE, RANDOM_PER_CLASS = ({"source": "random", "granularity": g} for g in ("sample", "class"))


def _table2_sweep(sweep, random_sample: float, random_class: float, permuted: float):
    """Table 2's rows as its sweep labels them (the row name is the setting; the graph controls are told
    apart by their configs), three seeds each; the three control rows at the given top-1 (+ seed)."""
    rows = [("simclr", "augmentation", 82.0, None, "none"), ("supcon", "true_class", 86.0, None, "none"),
            ("xclr", "minilm", 86.5, MINILM, "none"), ("xclr", "permuted", permuted, MINILM, "permuted_graph"),
            ("xclr", "random_sample", random_sample, RANDOM_PER_SAMPLE, "none"),
            ("xclr", "random_class", random_class, RANDOM_PER_CLASS, "none")]
    for seed in range(3):
        write_result(sweep, f"untrained_{seed}", table="2", method="untrained", setting="untrained", seed=seed,
                     metrics={"imagenet": {"top1": 52.0}})
        for method, setting, top1, graph, sanity in rows:
            write_result(sweep, f"{setting}_{seed}", table="2", method=method, setting=setting, seed=seed, graph=graph,
                         sanity=sanity, metrics={"imagenet": {"top1": top1 + 0.2 * seed}})
    write_report(sweep, sweep.parent / "out")
    return pd.read_csv(sweep.parent / "out" / "table2_tiny_checks.csv").set_index("check")["passes"].to_dict()


def test_table2_graph_controls_are_held_to_what_their_graph_carries(tmp_path):
    """random_sample (no semantic edge) must fall to SimCLR's level, random_class (class identity alone) stay
    at SupCon's, permuted (minilm's values, wrong pairing) fall below minilm; a pipeline where the per-sample
    graph still carries classes, or the permuted graph its pairing, fails them."""
    working = _table2_sweep(tmp_path / "working" / "table2_tiny", random_sample=82.5, random_class=85.5, permuted=84.0)
    broken = _table2_sweep(tmp_path / "broken" / "table2_tiny", random_sample=86.0, random_class=82.0, permuted=86.5)
    controls = ["xclr (random_sample) falls to the label-free method's level",
                "xclr (random_class) stays at the true-class method's level", "xclr (permuted) falls below the real graph"]
    assert [working[check] for check in controls] == [True, True, True]
    assert [broken[check] for check in controls] == [False, False, False]
    assert "xclr (random_sample) beats the label-free method" not in working, "not expected of a graph without edges"
    assert working["xclr (random_class) beats the label-free method"] and working["xclr (minilm) beats the label-free method"]
    assert not any(check.startswith("xclr (permuted) clears") for check in working)
    markdown = (tmp_path / "working" / "out" / "table2_tiny.md").read_text()
    assert "Rows: harness readings (the paper's Table 2 rows and encoders are not public" in markdown
