"""Per-sample side information for X-CLR: the text embedding whose cosine builds the target graph.

Class-name graphs give every sample its class caption's embedding (C x E, computed once), caption
graphs read each sample's row from the on-disk caption cache. The random-graph control replaces the text
by seeded random unit vectors, at one of two granularities (``graph.granularity``):

- ``sample``: a vector per dataset index, the same in every epoch and on every rank (hashed from the seed
  and the index, never stored: a 12M-sample dataset needs no table). Distinct samples are nearly
  orthogonal, so the target keeps almost all of its mass on the other view: a random graph with no
  semantic edges, which should train like SimCLR.
- ``class``: a vector per class: same-class samples share a row (similarity 1), so the target is SupCon's
  plus noise between classes.

``sanity=permuted_graph`` permutes a text graph's rows (xsample.train.sanity.graph_row_donors). The graph
itself (N x N per batch) is built by the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from xsample.config import RunConfig
from xsample.data import root_dataset
from xsample.graph import CaptionEmbeddingCache, class_caption_embeddings, load_text_encoder
from xsample.train.sanity import graph_row_donors

RANDOM_GRAPH_DIM = 64


def _class_names(dataset: Dataset) -> list[str]:
    dataset = root_dataset(dataset)
    names = getattr(dataset, "class_names", None)
    if not names:
        raise ValueError(f"{type(dataset).__name__} has no class names: use graph=captions for a captioned dataset")
    return list(names)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic): well-mixed bits from counters."""
    values = values + np.uint64(0x9E3779B97F4A7C15)
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def random_unit_vectors(keys: torch.Tensor | np.ndarray, seed: int, dim: int = RANDOM_GRAPH_DIM) -> torch.Tensor:
    """(len(keys), dim) unit rows, Gaussian directions determined by (seed, key) alone: the same key gives
    the same vector in any batch, epoch, process or rank."""
    keys = np.asarray(torch.as_tensor(keys).cpu(), dtype=np.int64).astype(np.uint64)
    counters = keys[:, None] * np.uint64(dim) + np.arange(dim, dtype=np.uint64)[None, :]
    bits = _splitmix64(counters ^ _splitmix64(np.full(1, seed, dtype=np.uint64)))
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # in (0, 1)
    radius, angle = np.sqrt(-2.0 * np.log(uniform[:, 0::2])), 2.0 * np.pi * uniform[:, 1::2]
    gaussian = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)  # Box-Muller
    return F.normalize(torch.from_numpy(gaussian).float(), dim=1)


def class_embeddings(config: RunConfig, dataset: Dataset) -> torch.Tensor:
    """(C, E) unit rows: text embeddings of the templated class names, or random for the per-class control."""
    graph = config.graph
    names = _class_names(dataset)
    if graph.source == "random":
        return random_unit_vectors(torch.arange(len(names)), config.seed)
    encoder = load_text_encoder(graph.encoder)
    return class_caption_embeddings(names, encoder, template=graph.template).float()


def caption_cache(config: RunConfig, dataset: Dataset) -> CaptionEmbeddingCache:
    """The caption cache of the training split, the same one `python -m xsample.graph build` makes."""
    graph, data = config.graph, config.data
    return CaptionEmbeddingCache.for_dataset(
        root_dataset(dataset), cache_root=Path(config.paths.cache), encoder_name=graph.encoder,
        template=graph.template, name=data.name, split="train", root=data.root, options=data.options,
    )


def build_side_information(config: RunConfig, dataset: Dataset) -> Callable[[dict], torch.Tensor]:
    """The per-batch side information: ``side(batch)`` gives one row per sample of the batch."""
    graph = config.graph
    source = graph.source
    permuted = config.sanity == "permuted_graph"
    if source == "captions":
        cache = caption_cache(config, dataset)
        if permuted:
            donors = torch.from_numpy(graph_row_donors(len(cache)))
            return lambda batch: cache.rows(donors[batch["index"]]).float()
        return lambda batch: cache.rows(batch["index"]).float()
    if source == "random" and graph.granularity == "sample":
        seed = config.seed
        return lambda batch: random_unit_vectors(batch["index"], seed)
    per_class = class_embeddings(config, dataset)
    if permuted:
        per_class = per_class[torch.from_numpy(graph_row_donors(per_class.shape[0]))]
    return lambda batch: per_class[batch["label"]]
