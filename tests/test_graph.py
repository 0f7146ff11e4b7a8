"""Caption-embedding cache (resume, reuse, rows), graph statistics, class-name graphs and the CLI."""

import json

import numpy as np
import pytest
import torch

from xsample.graph import CaptionEmbeddingCache, class_caption_embeddings, graph_stats, load_text_encoder
from xsample.graph.__main__ import main as graph_cli
from xsample.graph.cache import MANIFEST_NAME, PROGRESS_NAME, cache_directory

CAPTIONS = [f"a {colour} {shape} on grass" for colour in ("red", "blue", "green", "black", "white")
            for shape in ("circle", "square", "star", "triangle")]


class FailingAfter:
    """Bag-of-words encoder that dies after ``chunks`` calls, like a job killed mid-build."""

    def __init__(self, chunks: int):
        self.inner, self.left = load_text_encoder("bag_of_words"), chunks
        self.name, self.dim, self.calls = self.inner.name, self.inner.dim, 0

    def encode(self, texts, batch_size=256):
        self.calls += 1
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.inner.encode(texts, batch_size)


def _build(directory, encoder, chunk_size=6):
    return CaptionEmbeddingCache.build(directory, len(CAPTIONS), lambda start: iter(CAPTIONS[start:]), encoder,
                                       chunk_size=chunk_size, progress=False)


def test_cache_rows_equal_direct_encoding(tmp_path):
    cache = _build(tmp_path / "c", load_text_encoder("bag_of_words"))
    direct = load_text_encoder("bag_of_words").encode(CAPTIONS)
    assert len(cache) == len(CAPTIONS) and cache.rows([3, 0]).dtype == torch.float16
    torch.testing.assert_close(cache.rows(torch.tensor([3, 0, 19])).float(), direct[[3, 0, 19]], atol=1e-3, rtol=0)
    manifest = json.loads((tmp_path / "c" / MANIFEST_NAME).read_text())
    assert manifest["model"] == "bag_of_words" and manifest["count"] == 20 and len(manifest["checksum"]) == 64


def test_killed_build_resumes_where_it_stopped(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "c", FailingAfter(chunks=2))
    assert not (tmp_path / "c" / MANIFEST_NAME).exists()
    assert len(json.loads((tmp_path / "c" / PROGRESS_NAME).read_text())["chunk_digests"]) == 2
    resumed = FailingAfter(chunks=100)
    cache = _build(tmp_path / "c", resumed)
    assert resumed.calls == 2  # 20 captions in chunks of 6: chunks 3 and 4 only
    fresh = _build(tmp_path / "fresh", load_text_encoder("bag_of_words"))
    np.testing.assert_array_equal(cache.embeddings, fresh.embeddings)
    assert cache.manifest["checksum"] == fresh.manifest["checksum"]
    reused = FailingAfter(chunks=0)
    _build(tmp_path / "c", reused)
    assert reused.calls == 0


def test_cache_directory_depends_on_key_encoder_and_template(tmp_path):
    base = cache_directory(tmp_path, {"name": "shapes", "size": "3k"}, "all-MiniLM-L6-v2", "{}")
    assert base == cache_directory(tmp_path, {"size": "3k", "name": "shapes"}, "all-MiniLM-L6-v2", "{}")
    assert base != cache_directory(tmp_path, {"name": "shapes", "size": "12k"}, "all-MiniLM-L6-v2", "{}")
    assert base != cache_directory(tmp_path, {"name": "shapes", "size": "3k"}, "bag_of_words", "{}")
    assert base != cache_directory(tmp_path, {"name": "shapes", "size": "3k"}, "all-MiniLM-L6-v2", "a photo of {}")


def test_out_of_range_rows_and_bad_template_are_refused(tmp_path):
    cache = _build(tmp_path / "c", load_text_encoder("bag_of_words"))
    with pytest.raises(IndexError, match="out of range"):
        cache.rows([20])
    with pytest.raises(ValueError, match="needs a"):
        CaptionEmbeddingCache.build(tmp_path / "t", 3, lambda s: iter(["a", "b", "c"]),
                                    load_text_encoder("bag_of_words"), template="no slot")


def test_graph_stats_closed_form():
    identical = torch.ones(4, 3)
    stats = graph_stats(identical, bins=4)
    assert stats["pairs"] == 6 and stats["mean"] == pytest.approx(1.0) and stats["std"] == pytest.approx(0.0)
    assert stats["histogram"]["counts"] == [0, 0, 0, 6]
    orthogonal = graph_stats(torch.eye(5), bins=2)
    assert orthogonal["mean"] == pytest.approx(0.0) and sum(orthogonal["histogram"]["counts"]) == 10
    sampled = graph_stats(torch.randn(1000, 8), max_pairs=5000, seed=1)
    assert sampled["pairs"] == 5000 and abs(sampled["mean"]) < 0.05


def test_minilm_class_graph_is_semantic():
    """The real all-MiniLM-L6-v2 weights from the gt package: related class names are closer."""
    names = ["sneaker", "ankle boot", "dress", "bag"]
    embeddings = class_caption_embeddings(names, load_text_encoder("all-MiniLM-L6-v2"))
    similarity = embeddings @ embeddings.T
    assert embeddings.shape == (4, 384)
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[0, 3]


def test_cli_build_then_stats_on_shapes(tmp_path, capsys):
    common = ["--dataset", "shapes", "--option", "size=3k", "--encoder", "bag_of_words",
              "--cache-root", str(tmp_path)]
    assert graph_cli(["build", *common]) == 0
    assert "3000 x 512 float16" in capsys.readouterr().out
    assert graph_cli(["stats", *common, "--max-pairs", "10000"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["pairs"] == 10000 and stats["num_nodes"] == 3000 and 0 < stats["mean"] < 1
    assert graph_cli(["diagnose", *common, "--batch-size", "64"]) == 0
    diagnostics = json.loads(capsys.readouterr().out)
    assert diagnostics["batch_size"] == 64 and diagnostics["mean_offdiagonal"] == pytest.approx(stats["mean"], abs=0.05)
    assert diagnostics["share_same_class"] + diagnostics["share_rest"] == pytest.approx(1.0, abs=1e-4)


def test_cli_reports_a_dataset_without_captions(tmp_path, capsys):
    assert graph_cli(["build", "--dataset", "fashion_mnist", "--option", "max_samples=100",
                      "--cache-root", str(tmp_path)]) == 2
    assert "no captions" in capsys.readouterr().err


def test_text_encoder_missing_offline_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not available offline.*local path as graph.encoder"):
        load_text_encoder("nobody/no-such-sentence-encoder")
