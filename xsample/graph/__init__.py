"""Similarity graphs for X-CLR: text encoders, class-name graphs, the on-disk caption-embedding cache
and graph statistics. ``python -m xsample.graph build|stats`` is the command-line front end."""

from xsample.graph.cache import (
    CacheMismatchError,
    CaptionEmbeddingCache,
    cache_directory,
    captions_of,
    dataset_identity,
)
from xsample.graph.encoders import DEFAULT_ENCODER, TextEncoder, class_caption_embeddings, load_text_encoder
from xsample.graph.stats import graph_stats

__all__ = [
    "DEFAULT_ENCODER", "CacheMismatchError", "CaptionEmbeddingCache", "TextEncoder", "cache_directory", "captions_of",
    "dataset_identity",
    "class_caption_embeddings", "graph_stats", "load_text_encoder",
]
