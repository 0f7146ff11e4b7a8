"""Weighted k-NN classifier on frozen features (the InstDisc / DINO evaluation).

Cosine similarity, the k nearest training items vote for their label with weight exp(similarity / T)
(T = 0.07 by default, as in InstDisc and DINO); the class with the largest summed weight wins. Similarities are
computed block by block (queries x bank) with a running top-k, so memory stays bounded at any dataset size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _nearest(queries: torch.Tensor, bank: torch.Tensor, k: int, bank_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    best_similarity = queries.new_empty(len(queries), 0)
    best_index = torch.empty(len(queries), 0, dtype=torch.long, device=queries.device)
    for start in range(0, len(bank), bank_chunk):
        similarity = queries @ bank[start:start + bank_chunk].T
        chunk_similarity, chunk_index = similarity.topk(min(k, similarity.shape[1]), dim=1)
        merged_similarity = torch.cat([best_similarity, chunk_similarity], dim=1)
        merged_index = torch.cat([best_index, chunk_index + start], dim=1)
        best_similarity, order = merged_similarity.topk(min(k, merged_similarity.shape[1]), dim=1)
        best_index = merged_index.gather(1, order)
    return best_similarity, best_index


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    query_chunk: int = 1024,
    bank_chunk: int = 65536,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Predicted label of every query (CPU LongTensor). Unlabelled (-1) training items are not in the bank."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    keep = train_labels >= 0
    if not bool(keep.any()):
        raise ValueError("k-NN bank is empty: every training label is -1")
    device = torch.device(device)
    bank = F.normalize(train_features[keep].float(), dim=1).to(device)
    bank_labels = train_labels[keep].long().to(device)
    classes = int(bank_labels.max()) + 1 if num_classes is None else int(num_classes)
    predictions = []
    for start in range(0, len(query_features), query_chunk):
        queries = F.normalize(query_features[start:start + query_chunk].float(), dim=1).to(device)
        similarity, index = _nearest(queries, bank, k, bank_chunk)
        votes = torch.zeros(len(queries), classes, device=device)
        votes.scatter_add_(1, bank_labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1).cpu())
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
