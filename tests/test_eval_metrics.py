"""Scoring rules on small hand-made examples: ReaL, class maps, ImageNet-9 gap, k-NN, zero-shot."""

from __future__ import annotations

import pytest
import torch

from xsample.eval import (
    imagenet9_metrics,
    knn_predict,
    mapped_predictions,
    real_top1_accuracy,
    top1_accuracy,
    zero_shot_top1,
)


def test_top1_leaves_out_unlabelled_items():
    assert top1_accuracy(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2, -1, 3])) == pytest.approx(200 / 3)


def test_real_accuracy_excludes_empty_label_lists():
    predictions = torch.tensor([3, 1, 4, 0, 2])
    label_lists = [[3, 5], [2], [], [0], []]
    # Scored: items 0, 1, 3 -> correct: 0 and 3.
    assert real_top1_accuracy(predictions, label_lists) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="empty"):
        real_top1_accuracy(torch.tensor([1]), [[]])


def test_mapped_predictions_restrict_or_count_unmapped_as_wrong():
    logits = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.8, 0.1, 0.0, 0.7]])
    class_map = torch.tensor([0, -1, 1, 1])  # probe class 1 has no target class
    assert mapped_predictions(logits, class_map).tolist() == [1, 0]
    assert mapped_predictions(logits, class_map, restrict=False).tolist() == [-1, 0]
    with pytest.raises(ValueError, match="one target"):
        mapped_predictions(logits, torch.tensor([0, 1]))


def test_imagenet9_gap_is_mixed_same_minus_mixed_rand():
    metrics = imagenet9_metrics({"original": 90.0, "only_fg": 70.0, "mixed_same": 80.0, "mixed_rand": 65.5})
    assert metrics == {"original": 90.0, "only_fg": 70.0, "mixed_same": 80.0, "mixed_rand": 65.5, "bg_gap": 14.5}
    with pytest.raises(ValueError, match="mixed_rand"):
        imagenet9_metrics({"mixed_same": 1.0})


def test_knn_weighted_vote_on_a_hand_made_bank():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    bank_labels = torch.tensor([0, 0, 1, 1, 2])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.65]])
    assert knn_predict(bank, bank_labels, queries, k=1).tolist() == [0, 1, 2]
    # k=5: every bank item votes; the weight exp(cos / T) makes the nearest ones dominate.
    assert knn_predict(bank, bank_labels, queries, k=5).tolist() == [0, 1, 2]
    # A very high temperature makes the vote a plain majority: with k=3, two class-0 neighbours beat class 2.
    assert knn_predict(bank, bank_labels, torch.tensor([[0.8, 0.45]]), k=3, temperature=1e6).tolist() == [0]
    assert knn_predict(bank, bank_labels, torch.tensor([[0.8, 0.45]]), k=1).tolist() == [2]


def test_knn_chunking_does_not_change_predictions():
    generator = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(97, 8, generator=generator), torch.randn(31, 8, generator=generator)
    labels = torch.randint(0, 5, (97,), generator=generator)
    labels[:4] = -1  # unlabelled items are not in the bank
    whole = knn_predict(bank, labels, queries, k=20)
    chunked = knn_predict(bank, labels, queries, k=20, query_chunk=4, bank_chunk=7)
    assert torch.equal(whole, chunked)


def test_zero_shot_picks_the_most_similar_class_text():
    class_text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.5]])  # norms differ: cosine ignores them
    images = torch.tensor([[3.0, 0.1, 0.0], [0.0, 0.2, 0.1], [0.1, 0.0, 0.3], [0.1, 0.2, 0.0]])
    assert zero_shot_top1(images, class_text, torch.tensor([0, 1, 2, 0])) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="class text features"):
        zero_shot_top1(images, class_text[:, :2], torch.tensor([0, 1, 2, 0]))
