"""Fig. 5 analog: the distribution of pairwise similarities in the X-CLR target graph."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xsample.graph import graph_stats
from xsample.train.components import build_train_dataset
from xsample.train.side_information import caption_cache, class_embeddings


def graph_similarity_metrics(config: dict[str, Any]) -> dict[str, Any]:
    dataset = build_train_dataset(config)
    spec = config["graph_stats"]
    if config["graph"]["source"] == "captions":
        cache = caption_cache(config, dataset)
        embeddings = torch.as_tensor(np.asarray(cache.rows(torch.arange(len(cache))), dtype=np.float32))
    else:
        embeddings = class_embeddings(config, dataset)
    stats = graph_stats(embeddings, bins=int(spec["bins"]), max_pairs=int(spec["max_pairs"]), seed=int(config["seed"]))
    stats["graph"] = config["graph"]["source"]
    stats["num_nodes"] = int(embeddings.shape[0])
    return stats
