"""Contrastive losses against plain float64 references, their special cases, open_clip, and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xsample.losses import (
    ClipLoss,
    SimCLRLoss,
    SupConLoss,
    XCLRLoss,
    clip_loss,
    simclr_loss,
    supcon_loss,
    xclr_loss,
)

# ---------------------------------------------------------------- naive float64 references


def _rows(z1, z2):
    return F.normalize(torch.cat([z1, z2]).double(), dim=1)


def reference_two_view(z1, z2, target_weight, temperature, mask_self=True):
    """Loop over rows: -sum_j t_ij log softmax_j(l_ij); t_ij proportional to target_weight(i, j)."""
    z = _rows(z1, z2)
    count = z.shape[0]
    losses = []
    for i in range(count):
        kept = [j for j in range(count) if not (mask_self and j == i)]
        logits = torch.stack([z[i] @ z[j] / temperature for j in kept])
        log_probs = logits - torch.logsumexp(logits, dim=0)
        weights = torch.tensor([float(target_weight(i, j)) for j in kept], dtype=torch.float64)
        losses.append(-(weights / weights.sum() * log_probs).sum())
    return torch.stack(losses).mean()


def reference_simclr(z1, z2, temperature):
    size = z1.shape[0]
    return reference_two_view(z1, z2, lambda i, j: j == (i + size) % (2 * size), temperature)


def reference_supcon(z1, z2, labels, temperature):
    size = z1.shape[0]
    return reference_two_view(z1, z2, lambda i, j: labels[i % size] == labels[j % size], temperature)


def reference_xclr(z1, z2, graph, temperature, graph_temperature, mask_self=True):
    size = z1.shape[0]
    return reference_two_view(
        z1, z2, lambda i, j: math.exp(float(graph[i % size, j % size]) / graph_temperature), temperature, mask_self
    )


def reference_clip(images, texts, logit_scale):
    images, texts = F.normalize(images.double(), dim=1), F.normalize(texts.double(), dim=1)
    size = images.shape[0]
    total = 0.0
    for i in range(size):
        per_image = torch.stack([logit_scale * images[i] @ texts[j] for j in range(size)])
        per_text = torch.stack([logit_scale * texts[i] @ images[j] for j in range(size)])
        total = total - (per_image[i] - torch.logsumexp(per_image, 0)) - (per_text[i] - torch.logsumexp(per_text, 0))
    return total / (2 * size)


def _leaves(*shape_seed):
    *shape, seed = shape_seed
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


def _value_and_grads(loss_fn, *inputs):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    loss = loss_fn(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    return loss.detach(), grads


def _assert_same(ours, reference, atol=1e-10):
    (value, grads), (ref_value, ref_grads) = ours, reference
    torch.testing.assert_close(value, ref_value, rtol=0, atol=atol)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=atol)


# ---------------------------------------------------------------- agreement with the references


@pytest.mark.parametrize(("size", "dim", "temperature"), [(1, 3, 0.5), (5, 4, 0.1), (9, 16, 0.07)])
def test_simclr_matches_reference(size, dim, temperature):
    z1, z2 = _leaves(size, dim, 0), _leaves(size, dim, 1)
    _assert_same(_value_and_grads(lambda a, b: simclr_loss(a, b, temperature=temperature), z1, z2),
                 _value_and_grads(lambda a, b: reference_simclr(a, b, temperature), z1, z2))


@pytest.mark.parametrize(("size", "num_classes", "temperature"), [(6, 2, 0.2), (10, 4, 0.1), (7, 7, 0.5)])
def test_supcon_matches_reference(size, num_classes, temperature):
    z1, z2 = _leaves(size, 8, 2), _leaves(size, 8, 3)
    labels = torch.randint(0, num_classes, (size,), generator=torch.Generator().manual_seed(size))
    _assert_same(_value_and_grads(lambda a, b: supcon_loss(a, b, labels, temperature=temperature), z1, z2),
                 _value_and_grads(lambda a, b: reference_supcon(a, b, labels, temperature), z1, z2))


@pytest.mark.parametrize("mask_self", [True, False])
@pytest.mark.parametrize(("size", "temperature", "graph_temperature"), [(1, 0.3, 0.2), (6, 0.1, 0.1), (9, 0.2, 0.05)])
def test_xclr_matches_reference(size, temperature, graph_temperature, mask_self):
    z1, z2 = _leaves(size, 8, 4), _leaves(size, 8, 5)
    # An asymmetric graph catches a transposed row/column.
    graph = torch.rand(size, size, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 2 - 1
    ours = _value_and_grads(lambda a, b: xclr_loss(a, b, graph, temperature=temperature,
                                                   graph_temperature=graph_temperature, mask_self=mask_self), z1, z2)
    reference = _value_and_grads(lambda a, b: reference_xclr(a, b, graph, temperature, graph_temperature, mask_self), z1, z2)
    _assert_same(ours, reference)


@pytest.mark.parametrize(("size", "logit_scale"), [(1, 10.0), (7, 1 / 0.07), (12, 3.0)])
def test_clip_matches_reference(size, logit_scale):
    images, texts = _leaves(size, 8, 7), _leaves(size, 8, 8)
    scale = torch.tensor(logit_scale, dtype=torch.float64)
    _assert_same(_value_and_grads(lambda a, b, s: clip_loss(a, b, logit_scale=s), images, texts, scale),
                 _value_and_grads(reference_clip, images, texts, scale))


def test_clip_matches_open_clip():
    from open_clip.loss import ClipLoss as OpenClipLoss

    generator = torch.Generator().manual_seed(9)
    images = F.normalize(torch.randn(32, 64, generator=generator), dim=1)
    texts = F.normalize(torch.randn(32, 64, generator=generator), dim=1)
    logit_scale = torch.tensor(1 / 0.07)
    expected = OpenClipLoss()(images, texts, logit_scale)
    torch.testing.assert_close(clip_loss(images, texts, logit_scale=logit_scale), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ClipLoss()(images, texts, logit_scale), expected, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- X-CLR reduces to SimCLR and SupCon

TINY_GRAPH_TEMPERATURE = 1e-4  # exp(-1 / 1e-4) is exactly 0 even in float64


def test_xclr_with_identity_graph_is_simclr():
    z1, z2 = _leaves(12, 16, 10), _leaves(12, 16, 11)
    ours = _value_and_grads(lambda a, b: xclr_loss(a, b, torch.eye(12, dtype=torch.float64), temperature=0.1,
                                                   graph_temperature=TINY_GRAPH_TEMPERATURE), z1, z2)
    _assert_same(ours, _value_and_grads(lambda a, b: simclr_loss(a, b, temperature=0.1), z1, z2), atol=1e-12)


def test_xclr_with_same_label_graph_is_supcon():
    """graph[a, b] = 1 when a and b share a label (so the diagonal is 1 too), else 0.

    With tau_s -> 0 every target weight is exp(0) = 1 on same-label columns and 0 elsewhere; the
    diagonal being 1 gives the other view of the sample the same weight as any other positive,
    and masking the self column in both logits and targets leaves exactly SupCon's positive set,
    uniformly weighted: L_out.
    """
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 3, 2, 0, 1])
    graph = (labels[:, None] == labels[None, :]).double()
    z1, z2 = _leaves(10, 16, 12), _leaves(10, 16, 13)
    ours = _value_and_grads(lambda a, b: xclr_loss(a, b, graph, temperature=0.1,
                                                   graph_temperature=TINY_GRAPH_TEMPERATURE), z1, z2)
    _assert_same(ours, _value_and_grads(lambda a, b: supcon_loss(a, b, labels, temperature=0.1), z1, z2), atol=1e-12)


def test_supcon_with_distinct_labels_is_simclr():
    z1, z2 = _leaves(8, 16, 14), _leaves(8, 16, 15)
    _assert_same(_value_and_grads(lambda a, b: supcon_loss(a, b, torch.arange(8), temperature=0.2), z1, z2),
                 _value_and_grads(lambda a, b: simclr_loss(a, b, temperature=0.2), z1, z2), atol=1e-12)


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("size", [1, 4, 33])
def test_identical_embeddings_give_log_of_candidates(size):
    """All logits equal: every softmax is uniform over its candidates, whatever the targets."""
    z = torch.ones(size, 5, dtype=torch.float64)
    labels = torch.arange(size) % 3
    graph = torch.rand(size, size, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    expected = torch.tensor(math.log(2 * size - 1), dtype=torch.float64)
    for value in (simclr_loss(z, z, temperature=0.1), supcon_loss(z, z, labels, temperature=0.1),
                  xclr_loss(z, z, graph, temperature=0.1, graph_temperature=0.3)):
        torch.testing.assert_close(value, expected)
    torch.testing.assert_close(xclr_loss(z, z, graph, temperature=0.1, graph_temperature=0.3, mask_self=False),
                               torch.tensor(math.log(2 * size), dtype=torch.float64))
    torch.testing.assert_close(clip_loss(z, z, logit_scale=20.0), torch.tensor(math.log(size), dtype=torch.float64))


def test_orthogonal_samples_closed_form():
    """Views identical, samples orthogonal: the positive has logit 1/tau, the 2N - 2 others 0."""
    size, temperature = 6, 0.2
    z = torch.eye(size, 8, dtype=torch.float64) * 3.0  # scaled: the losses normalise
    others = 2 * size - 2
    torch.testing.assert_close(simclr_loss(z, z, temperature=temperature),
                               torch.tensor(math.log(1 + others * math.exp(-1 / temperature)), dtype=torch.float64))
    torch.testing.assert_close(clip_loss(z, z, logit_scale=5.0),
                               torch.tensor(math.log(1 + (size - 1) * math.exp(-5.0)), dtype=torch.float64))
    # Self pair kept: the target splits evenly between the row itself and its other view.
    identity = torch.eye(size, dtype=torch.float64)
    kept = xclr_loss(z, z, identity, temperature=temperature, graph_temperature=TINY_GRAPH_TEMPERATURE, mask_self=False)
    expected = math.log(2 * math.exp(1 / temperature) + others) - 1 / temperature
    torch.testing.assert_close(kept, torch.tensor(expected, dtype=torch.float64))


def test_uniform_graph_spreads_targets_over_all_candidates():
    """A constant graph makes the targets uniform: loss = mean_i (lse_i - mean_j l_ij)."""
    z1, z2 = _leaves(5, 4, 17), _leaves(5, 4, 18)
    value = xclr_loss(z1, z2, torch.full((5, 5), 0.3, dtype=torch.float64), temperature=0.5, graph_temperature=0.1)
    z = _rows(z1, z2)
    logits = (z @ z.T / 0.5).fill_diagonal_(float("-inf"))
    off_diagonal = ~torch.eye(10, dtype=torch.bool)
    expected = (torch.logsumexp(logits, 1) - (logits.masked_fill(~off_diagonal, 0).sum(1) / 9)).mean()
    torch.testing.assert_close(value, expected)


# ---------------------------------------------------------------- modules in one process


def test_modules_match_functions_without_process_group():
    generator = torch.Generator().manual_seed(19)
    z1, z2 = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 0, 2])
    captions = torch.randn(8, 12, generator=generator)
    graph = F.normalize(captions, dim=1) @ F.normalize(captions, dim=1).T
    torch.testing.assert_close(SimCLRLoss(0.1)(z1, z2), simclr_loss(z1, z2, temperature=0.1))
    torch.testing.assert_close(SupConLoss(0.1)(z1, z2, labels), supcon_loss(z1, z2, labels, temperature=0.1))
    for mask_self in (True, False):
        torch.testing.assert_close(
            XCLRLoss(0.1, 0.05, mask_self=mask_self)(z1, z2, captions.half()),
            xclr_loss(z1, z2, graph.half().float(), temperature=0.1, graph_temperature=0.05, mask_self=mask_self),
            rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ClipLoss()(z1, z2, torch.tensor(14.0)), clip_loss(z1, z2, logit_scale=14.0))


def test_xclr_graph_gets_no_gradient():
    z1, z2 = _leaves(4, 3, 20), _leaves(4, 3, 21)
    graph = torch.rand(4, 4, dtype=torch.float64, requires_grad=True)
    xclr_loss(z1, z2, graph, temperature=0.1, graph_temperature=0.1).backward()
    assert graph.grad is None and z1.grad is not None


# ---------------------------------------------------------------- mixed precision


def test_bf16_autocast_is_finite_and_close_to_fp32():
    generator = torch.Generator().manual_seed(22)
    projector = torch.nn.Linear(32, 64)
    inputs1, inputs2 = torch.randn(128, 32, generator=generator), torch.randn(128, 32, generator=generator)
    labels = torch.randint(0, 10, (128,), generator=generator)
    captions = torch.randn(128, 24, generator=generator)
    losses = {
        "simclr": lambda a, b: SimCLRLoss(0.1)(a, b),
        "supcon": lambda a, b: SupConLoss(0.1)(a, b, labels),
        "xclr": lambda a, b: XCLRLoss(0.1, 0.1)(a, b, captions),
        "clip": lambda a, b: ClipLoss()(a, b, torch.tensor(1 / 0.07)),
    }
    for name, loss_fn in losses.items():
        reference = loss_fn(projector(inputs1), projector(inputs2))
        projector.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z1, z2 = projector(inputs1), projector(inputs2)
            assert z1.dtype == torch.bfloat16
            value = loss_fn(z1, z2)
        value.backward()
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value) and torch.isfinite(projector.weight.grad).all(), name
        # bf16 keeps ~3 significant digits of the embeddings; the loss must not drift beyond that.
        assert abs(value.item() - reference.item()) < 2e-2 * reference.item(), (name, value.item(), reference.item())


# ---------------------------------------------------------------- errors


def test_errors_name_the_problem():
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="same shape|same N samples"):
        simclr_loss(z, torch.randn(5, 8), temperature=0.1)
    with pytest.raises(ValueError, match="same N samples"):
        supcon_loss(z, torch.randn(4), torch.zeros(4, dtype=torch.long), temperature=0.1)
    with pytest.raises(ValueError, match="empty"):
        simclr_loss(torch.randn(0, 8), torch.randn(0, 8), temperature=0.1)
    with pytest.raises(ValueError, match=r"graph must be \(N, N\) = \(4, 4\)"):
        xclr_loss(z, z, torch.eye(3), temperature=0.1, graph_temperature=0.1)
    with pytest.raises(ValueError, match="labels must be an integer vector with one class id per sample"):
        supcon_loss(z, z, torch.zeros(3, dtype=torch.long), temperature=0.1)
    with pytest.raises(ValueError, match="labels must be an integer vector"):
        supcon_loss(z, z, torch.zeros(4), temperature=0.1)
    with pytest.raises(ValueError, match="text_embeddings must be"):
        XCLRLoss(0.1, 0.1)(z, z, torch.randn(3, 5))
    with pytest.raises(ValueError, match="image_features and text_features"):
        clip_loss(z, torch.randn(4, 7), logit_scale=10.0)
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        clip_loss(z, z, logit_scale=torch.ones(2))
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite positive number"):
            simclr_loss(z, z, temperature=bad)
        with pytest.raises(ValueError, match="graph_temperature must be a finite positive number"):
            xclr_loss(z, z, torch.eye(4), temperature=0.1, graph_temperature=bad)
        with pytest.raises(ValueError, match="logit_scale must be a finite positive number"):
            clip_loss(z, z, logit_scale=torch.tensor(bad))
        with pytest.raises(ValueError, match="temperature must be a finite positive number"):
            SupConLoss(bad)
        with pytest.raises(ValueError, match="graph_temperature must be a finite positive number"):
            XCLRLoss(0.1, bad)
