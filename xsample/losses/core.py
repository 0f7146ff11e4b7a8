"""The one contrastive core: similarity logits, a target per row, cross-entropy against it.

Every loss in this package is ``mean_i [-sum_j t_ij log softmax_j(l_ij)]`` over rows i and columns
j, with ``l = scale * rows @ columns.T`` and an optional self mask. Only the targets t differ: a
class index per row (SimCLR, CLIP) or a probability matrix (SupCon, X-CLR). Logits and softmax are
computed in float32 (or float64) outside autocast: a bf16 softmax over thousands of columns loses
most of the target mass.

The two-view probability targets (SupCon, X-CLR) give both views of a sample the same row and
column, so the (2n, 2N) matrix is stored as its (n, N) sample block (``BlockTargets``) and never
materialised. Their cross-entropy is a custom autograd function: the forward pass needs only the
row log-sum-exp and ``sum_ij T_ij l_ij`` (the four (n, N) logit blocks folded onto the sample block),
and the backward pass writes ``softmax(l) - T`` into one buffer, subtracting the block in place. X-CLR
and SupCon thus cost what SimCLR's index cross-entropy costs, plus O(n N) elementwise work.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def check_temperature(name: str, value: float) -> float:
    """``value`` as a float, or ValueError when it is not a finite positive number."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value}; pass e.g. {name}=0.1")
    return value


def check_two_views(z1: Tensor, z2: Tensor) -> None:
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be (N, D) embeddings of the same N samples, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}; pass the two augmented views' projector outputs, one row per sample"
        )
    if z1.shape[0] == 0:
        raise ValueError("z1 and z2 are empty; a contrastive loss needs a batch of at least one sample")


def full_precision(device: torch.device) -> AbstractContextManager:
    """A region where autocast is off, so matmuls run in the inputs' (float32) dtype."""
    return torch.autocast(device_type=device.type, enabled=False)


def unit_rows(x: Tensor) -> Tensor:
    """L2-normalised rows in float32 (float64 inputs stay float64)."""
    return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=1)


@dataclass(frozen=True)
class TwoViewLayout:
    """Where one process's 2n rows ``[z1_local; z2_local]`` sit among the 2N columns ``[Z1; Z2]``.

    The global batch is the ranks' local batches concatenated in rank order; in a single process
    n = N and the offset is 0.
    """

    local_size: int  # n
    global_size: int  # N
    offset: int  # global id of this process's first sample
    device: torch.device

    def local_sample_ids(self) -> Tensor:
        return torch.arange(self.offset, self.offset + self.local_size, device=self.device)

    def self_columns(self) -> Tensor:
        """(2n,) column of each row's own embedding."""
        ids = self.local_sample_ids()
        return torch.cat([ids, ids + self.global_size])

    def other_view_columns(self) -> Tensor:
        """(2n,) column of each row's other augmented view."""
        ids = self.local_sample_ids()
        return torch.cat([ids + self.global_size, ids])


@dataclass(frozen=True)
class BlockTargets:
    """A (2n, 2N) probability target matrix T stored as its (n, N) sample block.

    T[(v, k), (w, b)] = probabilities[k, b] for views v, w and local sample k, global sample b,
    except T[i, self_column(i)] = 0 when ``mask_self``; ``probabilities`` is normalised so that
    each full row of T sums to 1.
    """

    probabilities: Tensor  # (n, N), no gradient
    layout: TwoViewLayout
    mask_self: bool


def similarity_logits(rows: Tensor, columns: Tensor, scale: float | Tensor, self_columns: Tensor | None = None) -> Tensor:
    """``scale * rows @ columns.T``, with entry (i, self_columns[i]) masked out of every softmax."""
    logits = (rows * scale) @ columns.T
    if self_columns is not None:
        row_ids = torch.arange(logits.shape[0], device=logits.device)
        # Outside autograd: the softmax gradient at a -inf logit is exactly 0 already, so recording the
        # fill would only add a dense copy of the gradient. Safe in place: the matmul saves its inputs only.
        with torch.no_grad():
            logits[row_ids, self_columns] = float("-inf")
    return logits


def contrastive_cross_entropy(rows: Tensor, columns: Tensor, scale: float | Tensor, targets: Tensor | BlockTargets,
                              self_columns: Tensor | None = None) -> Tensor:
    """Mean over rows of ``-sum_j t_ij log softmax_j(l_ij)``, ``l = scale * rows @ columns.T`` (self masked).

    ``targets``: a class-index vector (R,) (one-hot targets, self masked at ``self_columns``) or
    ``BlockTargets`` (two-view probability targets, self masked when ``targets.mask_self``).
    """
    if isinstance(targets, Tensor):
        return F.cross_entropy(similarity_logits(rows, columns, scale, self_columns), targets)
    logits = (rows * scale) @ columns.T
    return _BlockTargetCrossEntropy.apply(logits, targets.probabilities, targets.layout, targets.mask_self)


class _BlockTargetCrossEntropy(torch.autograd.Function):
    """``mean_i [logsumexp_j l_ij - sum_j T_ij l_ij]`` for two-view block targets (see the module docstring).

    Rows are ``[view 1; view 2]`` of n local samples, columns ``[view 1; view 2]`` of N global
    samples, so ``logits.view(2, n, 2, N)[v, k, w, b]`` pairs with ``probabilities[k, b]``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, probabilities: Tensor, layout: TwoViewLayout, mask_self: bool) -> Tensor:
        local_size, global_size = probabilities.shape
        # Fold the two row views, then the two column views (contiguous halves: cheap adds).
        by_sample = logits[:local_size] + logits[local_size:]
        cross = torch.dot((by_sample[:, :global_size] + by_sample[:, global_size:]).flatten(), probabilities.flatten())
        row_ids = torch.arange(2 * local_size, device=logits.device)
        if mask_self:
            self_cols = layout.self_columns()
            # T is 0 at the self pair, where the folded sum counted the block entry once per view.
            cross = cross - torch.dot(logits[row_ids, self_cols], probabilities.diagonal(layout.offset).repeat(2))
            # In place is safe: the matmul that made `logits` saved its inputs, not its output.
            logits[row_ids, self_cols] = float("-inf")
        log_probs = torch.log_softmax(logits, dim=1)
        # logsumexp_j l_ij = l_ia - log p_ia at any unmasked column a: the other view's.
        anchors = layout.other_view_columns()
        log_normaliser = logits[row_ids, anchors] - log_probs[row_ids, anchors]
        ctx.save_for_backward(log_probs, probabilities)
        ctx.layout, ctx.mask_self = layout, mask_self
        return (log_normaliser.sum() - cross) / logits.shape[0]

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        log_probs, probabilities = ctx.saved_tensors
        local_size, global_size = probabilities.shape
        grad = log_probs.exp()
        for rows in (slice(0, local_size), slice(local_size, None)):
            for columns in (slice(0, global_size), slice(global_size, None)):
                grad[rows, columns] -= probabilities
        if ctx.mask_self:
            # softmax and target are both 0 at the masked self pair.
            row_ids = torch.arange(2 * local_size, device=grad.device)
            grad[row_ids, ctx.layout.self_columns()] = 0.0
        return grad.mul_(grad_output / log_probs.shape[0]), None, None, None
