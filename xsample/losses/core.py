"""The one contrastive core: similarity logits, a target per row, cross-entropy against it.

Every loss in this package is ``mean_i [-sum_j t_ij log softmax_j(l_ij)]`` over rows i and columns
j, with ``l = scale * rows @ columns.T`` and an optional self mask. Only the targets t differ: a
class index per row (SimCLR, CLIP) or a probability matrix (SupCon, X-CLR). Logits and softmax are
computed in float32 (or float64) outside autocast: a bf16 softmax over thousands of columns loses
most of the target mass.

The two-view probability targets (SupCon, X-CLR) give both views of a sample the same row and
column, so the (2n, 2N) matrix is stored as its (n, N) sample block (``BlockTargets``) and never
materialised: for rows summing to 1 and any unmasked anchor column a_i,

    -sum_j t_ij log softmax_j(l_ij) = CE(l_i, a_i) - (sum_j t_ij l_ij - l_{i, a_i}),

and ``sum_j t_ij l_ij = scale * <row_i, sum_j t_ij column_j>`` is a small (n, N) @ (N, D) product.
X-CLR and SupCon thus cost one SimCLR cross-entropy plus O(n N D), with no extra dense matrix.
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

    def mean_excess_over_anchor(self, rows: Tensor, columns: Tensor, scale: float | Tensor) -> Tensor:
        """``mean_i (sum_j T_ij l_ij - l_{i, other view of i})``, computed from features, not logits.

        With u_k = z1_k + z2_k (local) and s_b = Z1_b + Z2_b (global), both views of local sample k
        give ``sum_j T_ij l_ij = scale * <z_i, P_k s>`` (less the self column when masked), and
        the two anchor logits sum to ``scale * 2 <z1_k, z2_k> = scale * (|u_k|^2 - 2)`` for unit rows.
        Summing both views: ``scale * (<u_k, P_k s - u_k> + 2 - self terms)``.
        """
        local_size, global_size = self.layout.local_size, self.layout.global_size
        both_views = rows[:local_size] + rows[local_size:]
        # In one process the columns are the rows themselves.
        column_views = both_views if columns is rows else columns[:global_size] + columns[global_size:]
        excess = torch.dot(both_views.flatten(), (self.probabilities @ column_views - both_views).flatten())
        constant = 2.0 * local_size
        if self.mask_self:
            # Each masked self logit is exactly `scale` (unit rows), weighted by its block entry, in both views.
            local = torch.arange(local_size, device=rows.device)
            constant -= 2 * self.probabilities[local, local + self.layout.offset].sum()
        return scale * (excess + constant) / (2 * local_size)


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

    ``targets``: a class-index vector (R,) (one-hot targets) or ``BlockTargets`` (two-view probability
    targets, anchored at each row's other view, which is never masked).
    """
    logits = similarity_logits(rows, columns, scale, self_columns)
    if isinstance(targets, Tensor):
        return F.cross_entropy(logits, targets)
    anchored = F.cross_entropy(logits, targets.layout.other_view_columns())
    return anchored - targets.mean_excess_over_anchor(rows, columns, scale)
