"""Graph diagnostics (X-CLR's target shares), the random graphs and the permuted-graph sanity check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.engine_helpers import small_run_config
from xsample.config import RunConfig, RunConfigError
from xsample.graph.diagnostics import GraphDiagnostics, batch_diagnostics, class_graph_profile, target_shares
from xsample.train.sanity import graph_row_donors, with_sanity
from xsample.train.side_information import build_side_information, random_unit_vectors


class _Named(torch.utils.data.Dataset):
    class_names = ["a", "b", "c", "d", "e"]


class _TenClasses(torch.utils.data.Dataset):
    class_names = [f"class {number}" for number in range(10)]  # Fashion-MNIST's count


def test_shares_of_a_two_class_batch_match_the_closed_form():
    """4 samples, classes [0, 0, 1, 1], one-hot class embeddings: G = 1 within a class, 0 across. A row's
    target over its 7 columns: other view and both views of its classmate at e^10, 4 columns at e^0."""
    embeddings = torch.eye(2)[torch.tensor([0, 0, 1, 1])]
    shares = target_shares(embeddings, torch.tensor([0, 0, 1, 1]), graph_temperature=0.1)
    heavy, total = math.exp(10.0), 3 * math.exp(10.0) + 4
    assert shares["share_other_view"] == pytest.approx(heavy / total)
    assert shares["share_same_class"] == pytest.approx(3 * heavy / total)
    assert shares["share_rest"] == pytest.approx(4 / total)
    assert shares["mean_offdiagonal"] == pytest.approx(1 / 3)  # 4 of the 12 ordered pairs are same-class
    unmasked = target_shares(embeddings, torch.tensor([0, 0, 1, 1]), graph_temperature=0.1, mask_self=False)
    assert unmasked["share_same_class"] + unmasked["share_rest"] == pytest.approx(1.0)
    assert unmasked["share_other_view"] == pytest.approx(heavy / (4 * heavy + 4)), "the self column takes a share"


def test_other_view_share_follows_the_papers_target_definition():
    """softmax_j(G_ij / tau_s) over the 2N - 1 other columns, both views of a sample sharing its graph row."""
    embeddings = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    weights = torch.exp(unit @ unit.T / 0.5)
    other_view = weights.diagonal() / (2 * weights.sum(1) - weights.diagonal())
    shares = target_shares(embeddings, torch.tensor([0, 1, 0, 1, 2, 2]), graph_temperature=0.5)
    assert shares["share_other_view"] == pytest.approx(float(other_view.mean()), rel=1e-5)


def test_unlabelled_batches_have_no_same_class_share():
    shares = target_shares(torch.randn(8, 4), torch.full((8,), -1), graph_temperature=0.1)
    assert shares["share_same_class"] is None
    assert shares["share_other_view"] + shares["share_rest"] == pytest.approx(1.0)


def test_the_recorder_averages_its_first_batches_only():
    recorder = GraphDiagnostics(graph_temperature=0.1, batches=2)
    embeddings = torch.eye(2)[torch.tensor([0, 0, 1, 1])]
    while recorder.wanted:
        recorder.add(embeddings, torch.tensor([0, 0, 1, 1]))
    summary = recorder.summary()
    assert (summary["batches"], summary["batch_size"]) == (2, 4)
    assert summary["share_rest"] == pytest.approx(4 / (3 * math.exp(10.0) + 4), abs=1e-5)
    assert GraphDiagnostics(0.1).summary() is None


def test_a_class_graph_concentrates_on_the_other_view_as_batches_shrink():
    """The paper profile's effect in miniature: 100 classes, batch 512 vs 32."""
    profile = class_graph_profile(torch.randn(100, 16, generator=torch.Generator().manual_seed(1)), (512, 32),
                                  graph_temperature=0.1, samples_per_class=50, batches=2)
    large, small = profile["by_batch_size"][512], profile["by_batch_size"][32]
    assert small["share_other_view"] > large["share_other_view"]
    assert abs(profile["class_mean_offdiagonal"]) < 0.1, "random 16-d class vectors are nearly orthogonal"
    with pytest.raises(ValueError, match="batch_size must be in"):
        batch_diagnostics(lambda indices: torch.randn(len(indices), 3), None, 10, batch_size=20, graph_temperature=0.1)


def test_random_vectors_depend_on_seed_and_key_only():
    first = random_unit_vectors(torch.tensor([5, 9, 5]), seed=3)
    assert torch.equal(first[0], first[2]) and torch.equal(first[1], random_unit_vectors(np.array([9]), seed=3)[0])
    assert not torch.equal(first[0], random_unit_vectors(torch.tensor([5]), seed=4)[0])
    many = random_unit_vectors(torch.arange(2000), seed=0)
    assert torch.allclose(many.norm(dim=1), torch.ones(2000))
    similarities = (many[:1000] * many[1000:]).sum(1)
    assert abs(float(similarities.mean())) < 0.02 and 0.09 < float(similarities.std()) < 0.16, "~N(0, 1/64)"


def _side(source: str, granularity: str = "sample", sanity: str = "none", dataset=None):
    config = small_run_config("table='2'", "row=random_sample")
    config.update(graph={"source": source, "granularity": granularity, "encoder": None, "template": None},
                  seed=0, sanity=sanity)
    return build_side_information(RunConfig.from_dict(config), dataset or _Named())


def test_random_graph_granularity_sample_is_per_index_and_class_is_per_label():
    batch = {"index": torch.tensor([3, 4, 3]), "label": torch.tensor([1, 1, 2])}
    per_sample, per_class = _side("random", "sample")(batch), _side("random", "class")(batch)
    assert torch.equal(per_sample[0], per_sample[2]) and not torch.equal(per_sample[0], per_sample[1])
    assert torch.equal(per_class[0], per_class[1]) and not torch.equal(per_class[0], per_class[2])
    with pytest.raises(RunConfigError, match="run config key graph.granularity is 'pixel', not one of 'sample', 'class'"):
        _side("random", "pixel")


def test_permuted_graph_moves_every_class_row_and_keeps_the_similarity_values():
    labels = torch.arange(5)
    plain = _side("random", "class")({"label": labels})
    permuted = _side("random", "class", sanity="permuted_graph")({"label": labels})
    donors = graph_row_donors(5)
    assert torch.equal(permuted, plain[torch.from_numpy(donors)])
    assert not (donors == np.arange(5)).any(), "no class keeps its own row"
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.allclose((plain @ plain.T)[off].sort().values, (permuted @ permuted.T)[off].sort().values)
    assert with_sanity(_Named(), "permuted_graph").__class__ is _Named, "the dataset is untouched"
    assert np.array_equal(graph_row_donors(5), donors), "seeded"


def test_a_per_sample_random_graph_puts_no_mass_on_classmates_beyond_chance():
    """Table 2's random_sample control, through the run's side information on a tiny-sized batch (64 samples
    of 10 classes, graph_temperature 0.1): beyond the other view, the target's mass on classmates is what a
    spread blind to classes gives (the rest of the mass times the classmates' fraction of the columns), while
    the per-class random graph puts nearly all of it on classmates, as SupCon does."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (64,), generator=generator)
    batch = {"index": torch.randperm(6000, generator=generator)[:64], "label": labels}
    per_sample = target_shares(_side("random", "sample", dataset=_TenClasses())(batch), labels, graph_temperature=0.1)
    per_class = target_shares(_side("random", "class", dataset=_TenClasses())(batch), labels, graph_temperature=0.1)
    # A row's 126 columns besides itself and its other view: both views of its classmates, 2 (n_class - 1).
    classmates = (labels[:, None] == labels[None, :]).sum(1).float() - 1
    chance = float(((1 - per_sample["share_other_view"]) * 2 * classmates / 126).mean())
    beyond_other_view = per_sample["share_same_class"] - per_sample["share_other_view"]
    assert 0 <= beyond_other_view < 2 * chance < 0.01, (beyond_other_view, chance)
    assert per_class["share_same_class"] > 0.9 and per_class["share_same_class"] - per_class["share_other_view"] > 0.8
