"""Linear probe: learns separable data, stays at chance on noise, selects its lr on held-out data only."""

from __future__ import annotations

import pytest
import torch

from xsample.eval import fit_linear_probe, top1_accuracy
from xsample.eval.probe import fit_class_mean_probe

PROBE = {"learning_rates": [0.3, 0.1, 0.01], "epochs": 30, "batch_size": 256}


def _blobs(count: int, dim: int = 64, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    labels = torch.randint(0, classes, (count,), generator=generator)
    return centers[labels] + torch.randn(count, dim, generator=generator), labels


def test_probe_separates_linearly_separable_classes():
    features, labels = _blobs(3000)
    probe = fit_linear_probe(features[:2000], labels[:2000], **PROBE)
    assert top1_accuracy(probe.predict(features[2000:]), labels[2000:]) > 99.0
    assert probe.val_size == 200 and probe.fit_size == 1800
    assert set(probe.val_top1) == set(PROBE["learning_rates"]) and probe.learning_rate in probe.val_top1


def test_probe_is_at_chance_on_random_labels():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(4000, 32, generator=generator)
    labels = torch.randint(0, 4, (4000,), generator=generator)
    probe = fit_linear_probe(features[:3000], labels[:3000], **PROBE)
    assert abs(top1_accuracy(probe.predict(features[3000:]), labels[3000:]) - 25.0) < 5.0


def test_lr_is_chosen_by_held_out_accuracy_of_training_items_only():
    features, labels = _blobs(1000, classes=10)
    labels[::7] = -1  # unlabelled items never enter the probe
    probe = fit_linear_probe(features, labels, **PROBE, val_fraction=0.2, seed=3)
    held_out = probe.val_indices
    assert bool((labels[held_out] >= 0).all())
    assert len(held_out) == probe.val_size == round(0.2 * int((labels >= 0).sum()))
    # The reported held-out accuracy of the chosen lr is the chosen probe's accuracy on exactly those items,
    # and the chosen lr is the first best one in the given order.
    assert probe.val_top1[probe.learning_rate] == pytest.approx(top1_accuracy(probe.predict(features[held_out]), labels[held_out]))
    best = max(probe.val_top1.values())
    assert probe.learning_rate == next(lr for lr in PROBE["learning_rates"] if probe.val_top1[lr] == best)


def test_probe_is_deterministic_given_the_seed():
    features, labels = _blobs(600)
    first = fit_linear_probe(features, labels, **PROBE, seed=5)
    second = fit_linear_probe(features, labels, **PROBE, seed=5)
    other = fit_linear_probe(features, labels, **PROBE, seed=6)
    assert torch.equal(first.weight, second.weight) and torch.equal(first.val_indices, second.val_indices)
    assert not torch.equal(first.val_indices, other.val_indices)


def test_num_classes_may_exceed_the_labels_seen():
    features, labels = _blobs(300, classes=3)
    assert fit_linear_probe(features, labels, **PROBE, num_classes=7).logits(features).shape == (300, 7)
    with pytest.raises(ValueError, match="num_classes"):
        fit_linear_probe(features, labels, **PROBE, num_classes=2)


@pytest.mark.parametrize(("override", "message"), [
    ({"learning_rates": []}, "learning_rates"), ({"learning_rates": [0.1, -1.0]}, "learning_rates"),
    ({"val_fraction": 0.0}, "val_fraction"), ({"epochs": 0}, "epochs"),
])
def test_bad_probe_arguments_are_named(override, message):
    features, labels = _blobs(100)
    with pytest.raises(ValueError, match=message):
        fit_linear_probe(features, labels, **{**PROBE, **override})


def test_class_mean_probe_assigns_each_item_to_the_nearest_class_direction():
    # Standardised by the reference (mean 0, std 1 per dimension), the class directions are the axes.
    reference = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    labelled = torch.tensor([[2.0, 0.1], [0.1, 3.0]])
    probe = fit_class_mean_probe(labelled, torch.tensor([0, 1]), num_classes=2, reference=reference)
    queries = torch.tensor([[5.0, 1.0], [0.2, 0.3], [-1.0, -3.0]])
    assert probe.predict(queries).tolist() == [0, 1, 0]
    assert probe.fit_size == 2 and probe.val_size == 0


def test_class_mean_probe_with_one_label_per_class_separates_blobs():
    features, labels = _blobs(2000)
    first = torch.stack([torch.nonzero(labels == c)[0, 0] for c in range(5)])
    probe = fit_class_mean_probe(features[first], labels[first], num_classes=5, reference=features)
    assert top1_accuracy(probe.predict(features), labels) > 95.0


def test_class_mean_probe_needs_an_item_of_every_class():
    with pytest.raises(ValueError, match=r"classes \[2\] have no labelled item"):
        fit_class_mean_probe(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), num_classes=3)
