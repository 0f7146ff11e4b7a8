"""Per-sample side information for X-CLR: the text embedding whose cosine builds the target graph.

Class-name graphs give every sample its class caption's embedding (C x E, computed once), caption
graphs read each sample's row from the on-disk caption cache, and the random-graph control uses
seeded random unit vectors per class. The graph itself (N x N per batch) is built by the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from xsample.data import root_dataset
from xsample.graph import CaptionEmbeddingCache, class_caption_embeddings, load_text_encoder

SOURCES = ("class_names", "captions", "random")
RANDOM_GRAPH_DIM = 64


def _class_names(dataset: Dataset) -> list[str]:
    dataset = root_dataset(dataset)
    names = getattr(dataset, "class_names", None)
    if not names:
        raise ValueError(f"{type(dataset).__name__} has no class names: use graph=captions for a captioned dataset")
    return list(names)


def class_embeddings(config: dict[str, Any], dataset: Dataset) -> torch.Tensor:
    """(C, E) unit rows: text embeddings of the templated class names, or random for the control."""
    graph = config["graph"]
    names = _class_names(dataset)
    if graph["source"] == "random":
        generator = torch.Generator().manual_seed(int(config["seed"]))
        return F.normalize(torch.randn(len(names), RANDOM_GRAPH_DIM, generator=generator), dim=1)
    encoder = load_text_encoder(graph["encoder"])
    return class_caption_embeddings(names, encoder, template=graph["template"]).float()


def caption_cache(config: dict[str, Any], dataset: Dataset) -> CaptionEmbeddingCache:
    """The caption cache of the training split, the same one `python -m xsample.graph build` makes."""
    graph, data = config["graph"], config["data"]
    return CaptionEmbeddingCache.for_dataset(
        root_dataset(dataset), cache_root=Path(config["paths"]["cache"]), encoder_name=graph["encoder"],
        template=graph.get("template") or "{}", name=data["name"], split="train", root=data.get("root"),
        options=data.get("options"),
    )


def build_side_information(config: dict[str, Any], dataset: Dataset) -> Callable[[dict], torch.Tensor]:
    source = config["graph"]["source"]
    if source not in SOURCES:
        raise ValueError(f"unknown graph.source={source!r}; choose one of {', '.join(SOURCES)}")
    if source == "captions":
        cache = caption_cache(config, dataset)
        return lambda batch: cache.rows(batch["index"]).float()
    per_class = class_embeddings(config, dataset)
    return lambda batch: per_class[batch["label"]]
