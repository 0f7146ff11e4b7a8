"""Fig. 5 analog: the distribution of pairwise similarities in the X-CLR target graph, and the graph
diagnostics of X-CLR's target at the scale's batch size (xsample.graph.diagnostics). Graph only, no
training: the text encoder embeds the class names or captions (once, into the caption cache), then the
statistics are sampled from the embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from xsample.config import RunConfig
from xsample.data import dataset_labels
from xsample.graph import graph_stats
from xsample.graph.diagnostics import batch_diagnostics
from xsample.train.components import build_train_dataset
from xsample.train.side_information import caption_cache, class_embeddings


def graph_similarity_metrics(config: RunConfig) -> dict[str, Any]:
    """The task's metrics: ``graph_similarity`` (histogram and summary of the graph's off-diagonal
    similarities) and ``graph_diagnostics`` (X-CLR's target shares over random batches of the training set)."""
    dataset = build_train_dataset(config)
    spec = config.graph_stats
    labels = None if isinstance(dataset, IterableDataset) else dataset_labels(dataset)  # shards have no classes
    if config.graph.source == "captions":
        cache = caption_cache(config, dataset)
        embeddings = torch.as_tensor(np.asarray(cache.rows(torch.arange(len(cache))), dtype=np.float32))

        def rows_of(indices: np.ndarray) -> torch.Tensor:
            return embeddings[torch.as_tensor(indices)]
    else:
        embeddings = class_embeddings(config, dataset)

        def rows_of(indices: np.ndarray) -> torch.Tensor:
            return embeddings[torch.as_tensor(labels[indices])]
    stats = graph_stats(embeddings, bins=spec.bins, max_pairs=spec.max_pairs, seed=config.seed)
    stats["graph"] = config.graph.source
    stats["num_nodes"] = int(embeddings.shape[0])
    method = config.method
    diagnostics = batch_diagnostics(rows_of, labels, len(dataset), batch_size=min(config.optim.batch_size, len(dataset)),
                                    graph_temperature=float(method.graph_temperature), seed=config.seed,
                                    mask_self=method.mask_self)
    return {"graph_similarity": stats, "graph_diagnostics": diagnostics}
