"""caption_noise on every caption source, and the refusal of settings that cannot act on a run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from experiments.run_config import value_problems
from tests.test_sweep_configs import _composed
from xsample.data import build_dataset
from xsample.data.fixtures import jpeg_bytes, write_shard
from xsample.graph import cache_directory, dataset_identity

PER_SHARD = 40


def _shards(root: Path) -> None:
    for shard in ("00000", "00001"):
        write_shard(root, shard, [{"key": f"{shard}{i:04d}", "jpg": jpeg_bytes(), "txt": f"caption {shard} {i}"}
                                  for i in range(PER_SHARD)])


def test_noisy_shards_give_training_items_and_the_caption_cache_the_same_noisy_captions(tmp_path):
    _shards(tmp_path / "cc3m")
    clean, noisy = (build_dataset("cc3m", "train", root=tmp_path / "cc3m", resampled=False, caption_noise=noise)
                    for noise in (0.0, 0.5))
    clean_captions, noisy_captions = list(clean.iter_captions()), list(noisy.iter_captions())
    streamed = {item["index"]: item["caption"] for item in noisy}
    assert [streamed[index] for index in range(len(noisy))] == noisy_captions, "CLIP's text is the graph's text"
    changed = sum(a != b for a, b in zip(clean_captions, noisy_captions, strict=True))
    assert 0.35 * len(clean) <= changed <= 0.5 * len(clean), changed
    for start in (0, PER_SHARD):  # permuted within each shard: the same captions, other owners
        assert Counter(noisy_captions[start:start + PER_SHARD]) == Counter(clean_captions[start:start + PER_SHARD])
    assert list(build_dataset("cc3m", "train", root=tmp_path / "cc3m", caption_noise=0.5).iter_captions()) == noisy_captions
    identities = [dataset_identity(dataset, name="cc3m", split="train", root=tmp_path / "cc3m",
                                   options={"caption_noise": noise}) for dataset, noise in ((clean, 0.0), (noisy, 0.5))]
    assert identities[0]["fingerprint"] != identities[1]["fingerprint"]
    assert cache_directory(tmp_path, identities[0], "e", "{}") != cache_directory(tmp_path, identities[1], "e", "{}")


def test_shapes_items_carry_the_noisy_captions():
    clean, noisy = (build_dataset("shapes", "train", size="3k", caption_noise=noise) for noise in (0.0, 0.5))
    assert noisy[11]["caption"] == noisy.captions[11]
    assert 0.4 < sum(a != b for a, b in zip(clean.captions, noisy.captions, strict=True)) / len(clean) <= 0.5
    with pytest.raises(ValueError, match=r"caption_noise must be in \[0, 1\], got 2.0"):
        build_dataset("shapes", "train", caption_noise=2.0)


@pytest.mark.parametrize("overrides, problem", [
    (["table='1'", "method=xclr", "caption_noise=0.5"],
     "caption_noise=0.5 cannot act: dataset=imagenet at tiny scale trains on shapes, which is not read with caption"),
    (["table='4'", "row=untrained", "caption_noise=0.5"], "caption_noise=0.5 cannot act: method=untrained reads no caption"),
    (["table='3'", "dataset=cc3m", "method=xclr", "graph=class_names", "caption_noise=0.5", "scale=paper"],
     "caption_noise=0.5 cannot act: graph=class_names reads no caption"),
    (["table='1'", "method=supcon", "sanity=permuted_graph"],
     "sanity=permuted_graph cannot act: it permutes the text graph X-CLR trains on (graph=class_names or captions), "
     "and method=supcon trains on no graph"),
    (["table='2'", "row=random_class", "sanity=permuted_graph"], "sanity=permuted_graph cannot act"),
    (["table='2'", "row=random_sample", "graph.granularity=pixel"], "graph.granularity='pixel' is not a granularity"),
    (["table='3'", "dataset=cc3m", "method=supcon", "scale=paper"],
     "method=supcon reads class labels, and dataset=cc3m at paper scale trains on cc3m, which has none"),
    (["table='3'", "dataset=cc12m", "method=xclr", "graph=random", "graph.granularity=class", "scale=rehearsal"],
     "graph=random reads class labels"),
])
def test_settings_that_cannot_act_are_refused(overrides, problem):
    assert any(line.startswith(problem) for line in value_problems(_composed(overrides))), value_problems(_composed(overrides))


@pytest.mark.parametrize("overrides", [
    ["table='4'", "row=clip_noisy"], ["table='4'", "row=xclr_noisy", "scale=paper"], ["table='2'", "row=permuted"],
    ["table='3'", "dataset=cc12m", "method=xclr", "sanity=permuted_graph"],
    ["table='3'", "dataset=cc3m", "method=xclr", "graph=random", "scale=paper"],  # per sample: no labels read
    ["table='3'", "dataset=cc3m", "method=supcon"],  # the tiny analog (shapes) has classes
])
def test_settings_that_act_pass(overrides):
    assert value_problems(_composed(overrides)) == []
