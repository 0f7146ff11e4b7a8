"""The untrained and raw_pixels baselines, the gain-over-untrained column, and the known-answer sanity runs."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis.report import write_report
from experiments.run_config import build_run_config
from tests.engine_helpers import planned, small_run_config
from tests.test_analysis import cell, read_cells, write_result
from tests.test_sweep_configs import REPO, _composed
from xsample.data import build_dataset
from xsample.models import PixelFeatures
from xsample.rundir.provenance import config_hash
from xsample.train.baselines import recompute_batchnorm_statistics
from xsample.train.run import run_experiment
from xsample.train.sanity import DetachedSupervision, with_sanity

# Measured at step 230 of the tiny profile: SupCon 65.3, shuffled labels 50.9 (untrained 52.3). A 4-epoch run
# (184 steps) gave only 58.6 vs 54.1, so the test trains 8 epochs (368 steps); 2000 test images make a single
# measurement's noise about 1 point.
MIN_SUPERVISED_ADVANTAGE = 5.0


@pytest.fixture(scope="module")
def shapes_train():
    return build_dataset("shapes", "train", size="3k")


def test_shuffled_labels_keep_images_and_class_sizes_but_detach_labels(shapes_train):
    shuffled = with_sanity(shapes_train, "shuffled_labels")
    labels = np.array([shuffled[i]["label"] for i in range(300)])
    original = shapes_train.labels[:300]
    assert np.array_equal(np.asarray(shuffled[5]["image"]), np.asarray(shapes_train[5]["image"]))
    assert shuffled[5]["index"] == 5 and shuffled[5]["caption"] == shapes_train[5]["caption"]
    assert (labels == original).mean() < 0.25, "labels must no longer match the images (24 classes: ~4% by chance)"
    assert Counter(shuffled.donor_labels.tolist()) == Counter(shapes_train.labels.tolist())
    assert np.array_equal(with_sanity(shapes_train, "shuffled_labels").donor_labels, shuffled.donor_labels), "seeded"


def test_misaligned_graph_hands_over_another_samples_side_information(shapes_train):
    misaligned = with_sanity(shapes_train, "misaligned_graph")
    item, donor = misaligned[7], shapes_train[int(misaligned.donors[7])]
    assert np.array_equal(np.asarray(item["image"]), np.asarray(shapes_train[7]["image"]))
    assert (item["label"], item["index"], item["caption"]) == (donor["label"], donor["index"], donor["caption"])
    assert isinstance(misaligned, DetachedSupervision) and misaligned.dataset is shapes_train  # caches unwrap it


def test_sanity_none_is_the_dataset_and_unknown_checks_are_refused(shapes_train):
    assert with_sanity(shapes_train, "none") is shapes_train
    with pytest.raises(ValueError, match="unknown sanity='labels'; choose one of none, shuffled_labels"):
        with_sanity(shapes_train, "labels")


def test_batchnorm_statistics_become_the_training_images_average():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm2d(3, momentum=0.1)

        def features(self, images):
            return self.norm(images).mean(dim=(2, 3))

    images = [{"image": torch.randn(3, 4, 4) * 3 + 2} for _ in range(40)]
    model = Net().eval()
    used = recompute_batchnorm_statistics(model, images, lambda image: image, images=1000, batch_size=8,
                                          device=torch.device("cpu"), seed=0)
    stacked = torch.stack([item["image"] for item in images])
    assert used == 40 and not model.training and model.norm.momentum == 0.1
    assert torch.allclose(model.norm.running_mean, stacked.mean(dim=(0, 2, 3)), atol=1e-5)


def test_pixel_features_flatten_tiny_images_and_pool_large_ones():
    assert PixelFeatures(32).features(torch.ones(2, 3, 32, 32)).shape == (2, 3 * 32 * 32)
    assert PixelFeatures(32).features(torch.ones(2, 3, 224, 224)).shape == (2, 3 * 32 * 32)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["untrained", "raw_pixels"])
def test_baselines_run_through_the_same_evaluation(tmp_path, method):
    config = small_run_config("table='2'", f"row={method}", "scale.probe.epochs=5", cache_dir=tmp_path / "cache")
    assert config["optim"] is None
    record = run_experiment(config, tmp_path / "run")
    assert record["status"] == "completed" and record["timing"]["steps"] == 0
    assert record["metrics"]["imagenet"]["top1"] > 40.0, "Fashion-MNIST, 10 classes: chance is 10%"


def test_report_shows_each_methods_gain_over_untrained(tmp_path):
    sweep = tmp_path / "table1_tiny"
    for seed in (0, 1):
        write_result(sweep, f"untrained_seed{seed}", method="untrained", seed=seed, metrics={"imagenet": {"top1": 40.0}})
        write_result(sweep, f"supcon_seed{seed}", method="supcon", seed=seed, metrics={"imagenet": {"top1": 70.0}})
        write_result(sweep, f"supcon_shuffled_seed{seed}", method="supcon", seed=seed, variant="sanity=shuffled_labels",
                     metrics={"imagenet": {"top1": 45.0}})
    out = tmp_path / "out"
    write_report(sweep, out)
    cells = read_cells(out, "table1_tiny")
    supcon = cells[(cells["method"] == "supcon") & cells["variant"].isna()].iloc[0]
    shuffled = cells[(cells["method"] == "supcon") & (cells["variant"] == "sanity=shuffled_labels")].iloc[0]
    assert supcon["gain_over_untrained"] == 30.0 and shuffled["gain_over_untrained"] == 5.0
    assert np.isnan(cell(cells, "untrained", "imagenet.top1")["gain_over_untrained"])
    assert "+30.0 vs untrained" in (out / "table1_tiny.md").read_text()


def test_sanity_is_part_of_the_run_identity():
    plain = build_run_config(_composed(["table='1'", "method=supcon"]))
    shuffled = build_run_config(_composed(["table='1'", "method=supcon", "sanity=shuffled_labels"]))
    assert (plain["sanity"], shuffled["sanity"]) == ("none", "shuffled_labels")
    assert config_hash(plain) != config_hash(shuffled)
    runs = planned("table='1'", "method=supcon", "seed=0", "sanity=none,shuffled_labels")
    assert len({run.run_dir for run in runs}) == 2
    assert {run.config["experiment"]["variant"] for run in runs} == {None, "sanity=shuffled_labels"}


def test_unknown_sanity_is_a_one_line_error():
    out = subprocess.run([sys.executable, "experiments/reproduce.py", "-m", "table=1", "sanity=typo", "launcher=plan"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    assert "xsample: sanity='typo' is not a sanity check; choose one of none, shuffled_labels, misaligned_graph" in out.stderr


def _known_answer_sweep(sweep, sanity_top1: list[float]):
    for seed, (untrained, simclr, supcon, shuffled) in enumerate(zip([52.0, 52.5, 52.3], [64.0, 65.0, 66.0],
                                                                      [76.0, 78.0, 80.0], sanity_top1, strict=True)):
        for method, top1, variant in (("untrained", untrained, None), ("simclr", simclr, None), ("supcon", supcon, None),
                                      ("supcon", shuffled, "sanity=shuffled_labels")):
            name = f"{method}_seed{seed}" + ("+shuffled" if variant else "")
            write_result(sweep, name, method=method, seed=seed, variant=variant, metrics={"imagenet": {"top1": top1}})


def test_report_states_whether_each_known_answer_check_passes(tmp_path):
    """A working pipeline: trained rows clear the untrained row, SupCon beats SimCLR, the shuffled-label run
    falls to SimCLR. A broken one (the shuffled run keeps SupCon's level) fails its sanity check in the report."""
    working, broken = tmp_path / "working" / "table1_tiny", tmp_path / "broken" / "table1_tiny"
    _known_answer_sweep(working, [57.0, 58.0, 59.0])
    _known_answer_sweep(broken, [75.0, 77.0, 79.0])
    for sweep in (working, broken):
        write_report(sweep, sweep.parent / "out")
    checks = pd.read_csv(working.parent / "out" / "table1_tiny_checks.csv")
    verdicts = dict(zip(checks["check"], checks["passes"], strict=True))
    assert verdicts == {"simclr clears the baseline": True, "supcon clears the baseline": True,
                        "supcon beats the label-free method": True,
                        "supcon [sanity=shuffled_labels] loses its supervised advantage": True}
    supcon_vs_simclr = checks[checks["check"] == "supcon beats the label-free method"].iloc[0]
    # stds over 3 seeds: SupCon 2.0, SimCLR 1.0: standard error of the difference sqrt(4/3 + 1/3), Welch's
    # degrees of freedom (5/3)^2 / ((4/3)^2/2 + (1/3)^2/2) = 2.94, Student's t there 3.216: interval +-4.155
    assert supcon_vs_simclr["difference"] == pytest.approx(13.0)
    assert supcon_vs_simclr["interval_95"] == pytest.approx(4.1554, abs=1e-3)
    broken_checks = pd.read_csv(broken.parent / "out" / "table1_tiny_checks.csv").set_index("check")
    assert not broken_checks.loc["supcon [sanity=shuffled_labels] loses its supervised advantage", "passes"]
    assert "| supcon [sanity=shuffled_labels] loses its supervised advantage | imagenet | imagenet.top1 | simclr | +12.0" \
        in (broken.parent / "out" / "table1_tiny.md").read_text()


def test_a_check_with_one_seed_on_either_side_is_untested(tmp_path):
    """One seed has no spread: a +13-point difference from one SupCon seed is no verdict, either way."""
    sweep = tmp_path / "table1_tiny"
    _known_answer_sweep(sweep, [57.0, 58.0, 59.0])
    for path in sweep.glob("runs/supcon_seed[12]/result.json"):
        path.unlink()
    write_report(sweep, tmp_path / "out")
    checks = pd.read_csv(tmp_path / "out" / "table1_tiny_checks.csv").set_index("check")
    assert pd.isna(checks.loc["supcon beats the label-free method", "passes"])
    assert checks.loc["supcon beats the label-free method", "n_row"] == 1
    assert checks.loc["simclr clears the baseline", "passes"]  # 3 seeds each: still a verdict
    line = next(line for line in (tmp_path / "out" / "table1_tiny.md").read_text().splitlines()
                if line.startswith("| supcon beats the label-free method"))
    assert line.endswith("| untested (n=1) |")


def _permuted_graph_sweep(sweep, permuted_family: list[float]) -> None:
    """X-CLR with its real graph and with the graph's class rows permuted (5 seeds each), SupCon beside them: the
    held-out classes' family accuracy (family_knn_top1) as given, their k-NN among themselves alike in every row."""
    for seed, (real, permuted) in enumerate(zip([60.0, 62.0, 61.0, 63.0, 64.0], permuted_family, strict=True)):
        for method, variant, top1, family in (("xclr", None, 70.0 + seed, real), ("supcon", None, 69.0 + seed, 58.0),
                                              ("xclr", "sanity=permuted_graph", 69.5 + seed, permuted)):
            name = f"{method}_seed{seed}" + ("+permuted" if variant else "")
            write_result(sweep, name, method=method, seed=seed, variant=variant,
                         metrics={"imagenet": {"top1": top1},
                                  "heldout_classes": {"knn_top1": 50.0 + seed, "family_knn_top1": family}})


def test_the_permuted_graph_row_must_lose_the_graphs_advantage_where_it_acts(tmp_path):
    """The permuted-graph row keeps SupCon's class identity, so it is not held to the label-free level on the
    first column; it passes when the real-graph row beats it on where held-out classes land (among their
    family), and fails when the two are alike (a pipeline whose graph values do not reach the loss). The
    held-out classes' k-NN among themselves is no check (what the values are claimed to buy, not how they act)."""
    verdicts = {}
    for name, permuted in (("working", [52.0, 54.0, 53.0, 55.0, 53.0]), ("broken", [61.0, 61.0, 62.0, 64.0, 62.0])):
        sweep = tmp_path / name / "table1_tiny"
        _permuted_graph_sweep(sweep, permuted)
        write_report(sweep, sweep.parent / "out")
        checks = pd.read_csv(sweep.parent / "out" / "table1_tiny_checks.csv").set_index("check")
        assert "xclr [sanity=permuted_graph] loses its supervised advantage" not in checks.index
        verdicts[name] = checks.loc["xclr [sanity=permuted_graph] falls below the real graph"]
    working, broken = verdicts["working"], verdicts["broken"]
    assert (working["column"], working["reference"], working["n_row"], working["n_reference"]) == \
        ("heldout_classes.family_knn_top1", "xclr", 5, 5)
    assert working["difference"] == pytest.approx(53.4 - 62.0) and working["passes"]
    assert not broken["passes"]


def test_xclr_against_supcon_and_its_permuted_graph_on_every_column_whatever_the_outcome(tmp_path):
    sweep = tmp_path / "table1_tiny"
    _permuted_graph_sweep(sweep, [52.0, 54.0, 53.0, 55.0, 53.0])
    write_result(sweep, "xclr_seed5", method="xclr", seed=5, metrics={"imagenet": {"top1": 75.0}})  # no held-out value
    write_report(sweep, tmp_path / "out")
    comparisons = pd.read_csv(tmp_path / "out" / "table1_tiny_comparisons.csv").set_index(["comparison", "column"])
    versus_supcon, versus_permuted = "xclr − supcon", "xclr − xclr [sanity=permuted_graph]"
    columns = ["imagenet.top1", "heldout_classes.knn_top1", "heldout_classes.family_knn_top1"]
    assert list(comparisons.index) == [(versus_supcon, c) for c in columns] + [(versus_permuted, c) for c in columns]
    top1 = comparisons.loc[(versus_supcon, "imagenet.top1")]
    assert (top1["n_row"], top1["n_reference"], top1["verdict"]) == (6, 5, "not resolved")
    family = comparisons.loc[(versus_supcon, "heldout_classes.family_knn_top1")]
    assert family["difference"] == pytest.approx(4.0) and family["verdict"] == "xclr ahead"
    assert comparisons.loc[(versus_permuted, "heldout_classes.family_knn_top1"), "verdict"] == "xclr ahead"
    assert comparisons.loc[(versus_permuted, "heldout_classes.knn_top1"), "verdict"] == "not resolved"
    text = (tmp_path / "out" / "table1_tiny.md").read_text()
    assert "## X-CLR against SupCon and against its permuted graph" in text
    assert "| xclr − xclr [sanity=permuted_graph] | imagenet | heldout_classes.family_knn_top1 | +8.6 |" in text


@pytest.mark.long
def test_supcon_loses_its_advantage_when_its_labels_are_shuffled(tmp_path):
    """End-to-end known answer: the same short SupCon run on the shapes world, with true labels and with
    labels shuffled across images. A pipeline that ignores or misattaches labels gives two equal numbers."""
    short = ["table='1'", "method=supcon", "scale.epochs=8", "table.evaluations=[imagenet]", "scale.probe.epochs=30",
             "scale.checkpoint_every_steps=100"]
    top1 = {}
    for sanity in ("none", "shuffled_labels"):
        config = small_run_config(*short, "scale.batch_size=64", f"sanity={sanity}", cache_dir=tmp_path / "cache")
        top1[sanity] = run_experiment(config, tmp_path / sanity)["metrics"]["imagenet"]["top1"]
    assert top1["none"] - top1["shuffled_labels"] >= MIN_SUPERVISED_ADVANTAGE, top1



@pytest.mark.long
def test_xclr_loses_what_its_graph_values_give_when_the_graph_rows_are_permuted(tmp_path):
    """End-to-end known answer in the families world: X-CLR on the class-name graph and on the same graph with
    its class rows permuted (same values and class identity, wrong neighbours), one tiny-profile run each
    (12 epochs, seed 0). With the real graph the learned class similarities follow the graph and held-out
    classes land among their seen relatives; with the permuted graph neither. A pipeline whose graph values do
    not reach the loss gives two alike runs. Measured over 5 seeds (xsample/data/shapes.py MEASUREMENTS):
    real - permuted was 9.2 to 15.3 on graph_alignment and 8.7 to 19.9 on family_knn_top1 in every seed."""
    short = ["table='1'", "method=xclr", "scale.epochs=12", "table.evaluations=[graph_alignment,heldout_classes]",
             "scale.probe.epochs=30", "scale.checkpoint_every_steps=1000", "scale.batch_size=64", "seed=0"]
    metrics = {}
    for sanity in ("none", "permuted_graph"):
        config = small_run_config(*short, f"sanity={sanity}", cache_dir=tmp_path / "cache")
        metrics[sanity] = run_experiment(config, tmp_path / sanity)["metrics"]
    alignment = {sanity: m["graph_alignment"]["pearson"] for sanity, m in metrics.items()}
    family = {sanity: m["heldout_classes"]["family_knn_top1"] for sanity, m in metrics.items()}
    assert alignment["none"] - alignment["permuted_graph"] >= 5, alignment
    assert family["none"] - family["permuted_graph"] >= 5, family
