"""Target builders: what each two-view loss asks every row to predict (see ``core`` for the layout)."""

from __future__ import annotations

import torch
from torch import Tensor

from xsample.losses.core import BlockTargets, TwoViewLayout


def simclr_targets(layout: TwoViewLayout) -> Tensor:
    """Class-index targets: the other view of the same sample (NT-Xent)."""
    return layout.other_view_columns()


def supcon_targets(local_labels: Tensor, global_labels: Tensor, layout: TwoViewLayout, dtype: torch.dtype) -> BlockTargets:
    """Uniform over the other rows with the same label (SupCon's L_out); the self pair is masked."""
    same_label = (local_labels[:, None] == global_labels[None, :]).to(dtype)
    # 2 views of each same-label sample, minus the row itself; >= 1 because the other view always counts.
    positives_per_row = 2 * same_label.sum(dim=1, keepdim=True) - 1
    return BlockTargets(same_label / positives_per_row, layout, mask_self=True)


def xclr_targets(graph_rows: Tensor, layout: TwoViewLayout, graph_temperature: float, mask_self: bool) -> BlockTargets:
    """Row softmax of graph / graph_temperature over the same entries as the logits.

    ``graph_rows`` is (n, N): the graph rows of the local samples against all global samples; both
    views of a sample share its row and column. With ``mask_self`` the self entry is left out.
    """
    block_softmax = torch.softmax(graph_rows * (1.0 / graph_temperature), dim=1)
    # A full row holds every block entry twice (once per view), minus the self entry when masked:
    # relative to the block's, its normaliser is 2 - (self share), or 2.
    if mask_self:
        local = torch.arange(layout.local_size, device=layout.device)
        normaliser = 2 - block_softmax[local, local + layout.offset]
        return BlockTargets(block_softmax.div_(normaliser[:, None]), layout, mask_self)
    return BlockTargets(block_softmax.div_(2), layout, mask_self)
