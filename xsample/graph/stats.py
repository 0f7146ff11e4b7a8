"""Distribution of off-diagonal similarities in a graph (the data behind the paper's Fig. 5a).

Pairs are sampled (seeded) when there are more than ``max_pairs``, so a 12M-node caption graph
is summarised without ever forming its N x N matrix.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _pairs(num_nodes: int, max_pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    total = num_nodes * (num_nodes - 1) // 2
    if total <= max_pairs:
        return torch.triu_indices(num_nodes, num_nodes, offset=1)
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(num_nodes, (max_pairs,), generator=generator)
    # An offset in [1, N) never maps a node onto itself.
    second = (first + torch.randint(1, num_nodes, (max_pairs,), generator=generator)) % num_nodes
    return first, second


def graph_stats(embeddings: torch.Tensor, *, bins: int = 50, max_pairs: int = 1_000_000, seed: int = 0) -> dict[str, Any]:
    """Summary and histogram over [-1, 1] of cosine similarities between distinct nodes."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings as an (N, E) matrix, got shape {tuple(embeddings.shape)}")
    unit = F.normalize(embeddings.float(), dim=1)
    first, second = _pairs(unit.shape[0], max_pairs, seed)
    similarities = torch.cat([(unit[first[i:i + 65536]] * unit[second[i:i + 65536]]).sum(1)
                              for i in range(0, first.numel(), 65536)])
    counts = torch.histc(similarities, bins=bins, min=-1.0, max=1.0)
    quantiles = torch.quantile(similarities[:1_000_000], torch.tensor(QUANTILES))
    return {
        "pairs": int(similarities.numel()),
        "mean": float(similarities.mean()),
        "std": float(similarities.std()) if similarities.numel() > 1 else 0.0,
        "quantiles": {f"q{int(q * 100):02d}": round(float(v), 6) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "fraction_above": {str(t): float((similarities > t).float().mean()) for t in (0.3, 0.5, 0.7, 0.9)},
        "histogram": {"edges": torch.linspace(-1.0, 1.0, bins + 1).tolist(), "counts": counts.long().tolist()},
    }
