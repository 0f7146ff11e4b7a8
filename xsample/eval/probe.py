"""Linear probe on frozen features: several learning rates trained at once, best one picked on held-out data.

Recipe (harness default; the paper's probe recipe is not public): features standardised with the mean/std
of the probe's fitting part; one linear layer per learning rate, all stored in one ``[n_lrs, D, C]`` tensor
and trained on the same shuffled minibatches with SGD (momentum, optional weight decay) under a cosine
schedule, zero initialisation, softmax cross-entropy with an analytic gradient (no autograd: fast on CPU).
A seeded ``val_fraction`` of the training set is held out; the learning rate with the best held-out top-1
wins (ties: the earlier one in ``learning_rates``) and that probe (trained on the remaining part, no refit)
is what gets scored on test sets. Items with a negative label (-1: unlabelled) are left out.

With a few labels per class there is no held-out part to pick a learning rate on; ``fit_class_mean_probe`` is
the linear probe without one (the nearest-class-mean classifier of few-shot evaluation, Snell et al. 2017):
features standardised with statistics of unlabelled features, scaled to unit length, and each class's weight
the unit mean of its labelled items, so that a test item goes to the class whose mean is nearest in angle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_STD_FLOOR = 1e-6  # constant feature dimensions (dead ReLUs) standardise to 0 instead of dividing by 0


@dataclass
class LinearProbe:
    mean: torch.Tensor  # [D]
    std: torch.Tensor  # [D]
    weight: torch.Tensor  # [D, C]
    bias: torch.Tensor  # [C]
    learning_rate: float
    val_top1: dict[float, float]  # held-out top-1 (percent) of every learning rate tried
    fit_size: int
    val_size: int
    val_indices: torch.Tensor  # positions (in the features given to fit_linear_probe) of the held-out items

    @property
    def num_classes(self) -> int:
        return self.weight.shape[1]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        features = features.to(self.weight.device, torch.float32)
        return ((features - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).argmax(dim=1).cpu()


def _labelled(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(f"expected features [N, D] and labels [N], got {tuple(features.shape)} and {tuple(labels.shape)}")
    positions = torch.nonzero(labels >= 0).flatten()
    if len(positions) == 0:
        raise ValueError("no labelled items (all labels are -1): the probe has nothing to train on")
    return features[positions], labels[positions].long(), positions


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    learning_rates: Sequence[float],
    epochs: int,
    batch_size: int,
    val_fraction: float = 0.1,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    num_classes: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Train one linear classifier per learning rate on the same minibatches; keep the best on held-out data."""
    learning_rates = [float(lr) for lr in learning_rates]
    if not learning_rates or any(not math.isfinite(lr) or lr <= 0 for lr in learning_rates):
        raise ValueError(f"learning_rates must be a non-empty list of positive numbers, got {learning_rates}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    features, labels, positions = _labelled(features, labels)
    classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if int(labels.max()) >= classes:
        raise ValueError(f"label {int(labels.max())} does not fit num_classes={classes}")
    count = len(labels)
    val_size = int(round(count * val_fraction))
    if val_size < 1 or val_size >= count:
        raise ValueError(f"val_fraction={val_fraction} of {count} labelled items leaves an empty held-out or fitting part")

    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=generator)
    val_rows, fit_rows = order[:val_size], order[val_size:]
    fit_features = features[fit_rows].to(device, torch.float32)
    fit_labels = labels[fit_rows].to(device)
    mean = fit_features.mean(dim=0)
    std = fit_features.std(dim=0, unbiased=False).clamp_min(_STD_FLOOR)
    fit_features.sub_(mean).div_(std)  # in place: at ImageNet scale the feature matrix is gigabytes

    n_lrs, dim = len(learning_rates), fit_features.shape[1]
    lr_vector = torch.tensor(learning_rates, device=device)
    weight = torch.zeros(n_lrs, dim, classes, device=device)
    bias = torch.zeros(n_lrs, classes, device=device)
    weight_velocity, bias_velocity = torch.zeros_like(weight), torch.zeros_like(bias)
    fit_size = len(fit_rows)
    steps_per_epoch = math.ceil(fit_size / batch_size)
    total_steps, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        shuffled = torch.randperm(fit_size, generator=generator).to(device)
        for start in range(0, fit_size, batch_size):
            rows = shuffled[start:start + batch_size]
            batch, targets = fit_features[rows], fit_labels[rows]
            logits = torch.einsum("bd,ldc->lbc", batch, weight) + bias[:, None, :]
            # d(mean cross-entropy)/d(logits) = (softmax - one_hot) / batch, for every lr at once.
            residual = logits.softmax(dim=2)
            residual[:, torch.arange(len(rows), device=device), targets] -= 1.0
            residual /= len(rows)
            weight_grad = torch.einsum("bd,lbc->ldc", batch, residual) + weight_decay * weight
            bias_grad = residual.sum(dim=1)
            weight_velocity.mul_(momentum).add_(weight_grad)
            bias_velocity.mul_(momentum).add_(bias_grad)
            step_size = lr_vector * (0.5 * (1.0 + math.cos(math.pi * step / total_steps)))
            weight.sub_(step_size[:, None, None] * weight_velocity)
            bias.sub_(step_size[:, None] * bias_velocity)
            step += 1

    val_features = ((features[val_rows].to(device, torch.float32) - mean) / std)
    val_predictions = (torch.einsum("bd,ldc->lbc", val_features, weight) + bias[:, None, :]).argmax(dim=2)
    val_top1 = (val_predictions == labels[val_rows].to(device)).float().mean(dim=1).mul(100.0).tolist()
    best = max(range(n_lrs), key=lambda index: (val_top1[index], -index))
    return LinearProbe(mean=mean, std=std, weight=weight[best].clone(), bias=bias[best].clone(),
                       learning_rate=learning_rates[best], val_top1=dict(zip(learning_rates, val_top1, strict=True)),
                       fit_size=fit_size, val_size=val_size, val_indices=positions[val_rows])


def fit_class_mean_probe(features: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                         reference: torch.Tensor | None = None) -> LinearProbe:
    """A linear probe whose class weights are the unit mean directions of the labelled items (no training, no
    hyperparameter). ``reference``: features (labels not needed) whose mean and std standardise the inputs,
    e.g. the whole unlabelled training set; default the labelled items themselves."""
    features, labels, positions = _labelled(features, labels)
    if int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} does not fit num_classes={num_classes}")
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no labelled item: a class-mean probe needs one per class")
    reference = (features if reference is None else reference).float()
    mean, std = reference.mean(dim=0), reference.std(dim=0, unbiased=False).clamp_min(_STD_FLOOR)
    unit = torch.nn.functional.normalize((features.float() - mean) / std, dim=1)
    sums = torch.zeros(num_classes, unit.shape[1]).index_add_(0, labels, unit)
    weight = torch.nn.functional.normalize(sums, dim=1).T.contiguous()
    # Scaling a test item does not change its nearest direction, so the unnormalised logits rank classes alike.
    return LinearProbe(mean=mean, std=std, weight=weight, bias=torch.zeros(num_classes), learning_rate=math.nan,
                       val_top1={}, fit_size=len(labels), val_size=0, val_indices=positions[:0])
