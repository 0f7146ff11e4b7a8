"""Similarity graphs for X-CLR: text encoders, class-name graphs, the on-disk caption-embedding cache
and graph statistics. ``python -m xsample.graph build|stats`` is the command-line front end."""

from xsample.graph.cache import CaptionEmbeddingCache, cache_directory, captions_of
from xsample.graph.encoders import DEFAULT_ENCODER, TextEncoder, class_caption_embeddings, load_text_encoder
from xsample.graph.stats import graph_stats

__all__ = [
    "DEFAULT_ENCODER", "CaptionEmbeddingCache", "TextEncoder", "cache_directory", "captions_of",
    "class_caption_embeddings", "graph_stats", "load_text_encoder",
]
