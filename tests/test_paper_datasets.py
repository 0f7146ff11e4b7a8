"""Paper-scale loaders on tiny on-disk fixtures laid out like the real releases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

import xsample.data.paper_datasets  # noqa: F401  (registers the datasets)
import xsample.data.webdataset_cc  # noqa: F401
from xsample.data.fixtures import jpeg_bytes as _jpeg_bytes
from xsample.data.fixtures import write_images as _write_images
from xsample.data.fixtures import write_shard
from xsample.data.registry import build_dataset

# --- ImageNet family ------------------------------------------------------------------------------

@pytest.fixture()
def imagenet_root(tmp_path: Path) -> Path:
    for split, count in (("train", 3), ("val", 2)):
        for wnid in ("n01440764", "n01443537"):
            _write_images(tmp_path / split / wnid, [f"{wnid}_{i}.JPEG" for i in range(count)])
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    return tmp_path


def test_imagenet_lists_classes_and_labels(imagenet_root: Path):
    train = build_dataset("imagenet", "train", root=imagenet_root)
    assert len(train) == 6
    assert train.wnids == ["n01440764", "n01443537"]
    assert train.class_names == ["tench", "goldfish"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    item = train[4]
    assert item["label"] == 1 and item["index"] == 4 and item["caption"] == ""
    assert item["image"].mode == "RGB" and item["image"].size == (8, 8)


def test_imagenet_without_synset_mapping_has_the_shipped_readable_names(imagenet_root: Path):
    (imagenet_root / "LOC_synset_mapping.txt").unlink()
    train = build_dataset("imagenet", "train", root=imagenet_root)
    assert train.class_names == ["tench", "goldfish"]
    assert train.imagenet_indices == [0, 1]


def test_non_imagenet_wnids_need_the_synset_mapping(imagenet_root: Path):
    _write_images(imagenet_root / "train" / "n99999999", ["a.JPEG"])
    with pytest.raises(ValueError, match=r"not ImageNet-1k wnids .*n99999999.*LOC_synset_mapping\.txt"):
        build_dataset("imagenet", "train", root=imagenet_root)
    (imagenet_root / "LOC_synset_mapping.txt").write_text("n99999999 zebra fish, Danio\nn01440764 ignored\n")
    train = build_dataset("imagenet", "train", root=imagenet_root)
    assert train.class_names == ["tench", "goldfish", "zebra fish"]  # shipped names win for ImageNet-1k wnids
    assert train.imagenet_indices == [0, 1, -1]


def test_corrupt_image_is_replaced_by_the_next_and_flagged(imagenet_root: Path, caplog):
    broken = imagenet_root / "val" / "n01443537" / "n01443537_0.JPEG"
    broken.write_bytes(b"not a jpeg at all")
    truncated = imagenet_root / "val" / "n01440764" / "n01440764_1.JPEG"
    truncated.write_bytes(_jpeg_bytes(size=64)[:200])
    val = build_dataset("imagenet", "val", root=imagenet_root)
    replaced = val[1]  # 1 and 2 are unreadable: 3 stands in, flagged with the first unreadable position
    assert (replaced["index"], replaced["label"], replaced["skipped"]) == (3, 1, 1)
    assert val[0]["skipped"] == -1 and val[2]["index"] == 3 and val[2]["skipped"] == 2
    assert "n01443537_0.JPEG" in caplog.text and "skipped" in caplog.text


def test_all_images_unreadable_is_an_error(imagenet_root: Path):
    for path in (imagenet_root / "val").rglob("*.JPEG"):
        path.write_bytes(b"broken")
    with pytest.raises(ValueError, match="images in a row .* are unreadable"):
        build_dataset("imagenet", "val", root=imagenet_root)[0]


@pytest.mark.parametrize("name, split", [("imagenet", "val"), ("imagenet_real", "val"), ("imagenet9", "original"),
                                         ("objectnet", "test"), ("mit_states", "all"), ("cc3m", "train")])
def test_missing_root_names_the_config_key(tmp_path: Path, monkeypatch, name: str, split: str):
    monkeypatch.delenv(f"XSAMPLE_{name.upper()}_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=rf"paths\.{name}"):
        build_dataset(name, split, root=tmp_path / "absent")


def test_root_falls_back_to_environment(imagenet_root: Path, monkeypatch):
    monkeypatch.setenv("XSAMPLE_IMAGENET_ROOT", str(imagenet_root))
    assert len(build_dataset("imagenet", "val")) == 4


def test_imagenet_real_pairs_sorted_val_images_and_drops_empty_lists(tmp_path: Path):
    # Sorted by file name across classes: val_1 (cls 1), val_2 (cls 0), val_3 (cls 1), val_4 (cls 0).
    _write_images(tmp_path / "val" / "n01440764", ["ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000004.JPEG"])
    _write_images(tmp_path / "val" / "n01443537", ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"])
    (tmp_path / "real.json").write_text(json.dumps([[1], [], [1, 0], [0]]))
    real = build_dataset("imagenet_real", "val", root=tmp_path)
    assert len(real) == 3 and real.excluded_empty == 1
    assert real.labels.tolist() == [1, 1, 0]
    assert [real[i]["real_labels"] for i in range(3)] == [[1], [1, 0], [0]]
    assert [real[i]["index"] for i in range(3)] == [0, 2, 3]
    assert Path(real.files[1]).name == "ILSVRC2012_val_00000003.JPEG"


def test_imagenet_real_rejects_a_count_mismatch(tmp_path: Path):
    _write_images(tmp_path / "val" / "n01440764", ["ILSVRC2012_val_00000001.JPEG"])
    (tmp_path / "real.json").write_text(json.dumps([[0], [0]]))
    with pytest.raises(ValueError, match="2 entries but"):
        build_dataset("imagenet_real", "val", root=tmp_path)


# --- ImageNet-9 -----------------------------------------------------------------------------------

IN9_FOLDERS = ["00_dog", "01_bird", "02_wheeled vehicle"]


@pytest.fixture()
def imagenet9_root(tmp_path: Path) -> Path:
    for variant in ("original", "mixed_rand"):
        for n, folder in enumerate(IN9_FOLDERS):
            _write_images(tmp_path / variant / "val" / folder, [f"{variant}_{n}_{i}.JPEG" for i in range(n + 1)])
    class_map = {str(i): -1 for i in range(1000)} | {"151": 0, "10": 1, "407": 2}
    (tmp_path / "in_to_in9.json").write_text(json.dumps(class_map))
    return tmp_path


def test_imagenet9_variants_and_class_map(imagenet9_root: Path):
    original = build_dataset("imagenet9", "original", root=imagenet9_root)
    assert len(original) == 6 and original.labels.tolist() == [0, 1, 1, 2, 2, 2]
    assert original.class_names == ["dog", "bird", "wheeled vehicle"]
    assert len(original.imagenet_class_map) == 1000
    assert [original.imagenet_class_map[i] for i in (151, 10, 0)] == [0, 1, -1]
    mixed = build_dataset("imagenet9", "mixed_rand", root=imagenet9_root)
    assert "mixed_rand" in mixed.files[0] and mixed[5]["label"] == 2
    with pytest.raises(ValueError, match="no split"):
        build_dataset("imagenet9", "val", root=imagenet9_root)


def test_imagenet9_without_class_map_says_where_to_get_it(imagenet9_root: Path):
    (imagenet9_root / "in_to_in9.json").unlink()
    with pytest.raises(FileNotFoundError, match="MadryLab/backgrounds_challenge"):
        build_dataset("imagenet9", "original", root=imagenet9_root)


# --- ObjectNet ------------------------------------------------------------------------------------

def test_objectnet_keeps_overlapping_classes_and_crops_the_border(tmp_path: Path):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    imagenet_names = ["tench, Tinca tinca", "analog clock", "digital clock", "banana"]
    (mappings / "imagenet_to_label_2012_v2").write_text("\n".join(imagenet_names) + "\n")
    (mappings / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {"Alarm clock": "analog clock; digital clock", "Banana": "banana"}))
    (mappings / "folder_to_objectnet_label.json").write_text(json.dumps(
        {"alarm_clock": "Alarm clock", "banana": "Banana", "sock": "Sock"}))
    for folder in ("alarm_clock", "banana", "sock"):
        _write_images(tmp_path / "images" / folder, [f"{folder}_{i}.jpg" for i in range(2)], size=12)
    objectnet = build_dataset("objectnet", "test", root=tmp_path)
    assert objectnet.class_names == ["Alarm clock", "Banana"]
    assert len(objectnet) == 4 and objectnet.labels.tolist() == [0, 0, 1, 1]
    assert objectnet.imagenet_class_map == [-1, 0, 0, 1]
    assert objectnet[0]["image"].size == (8, 8)


# --- MIT-States -----------------------------------------------------------------------------------

def test_mit_states_labels_nouns_and_attributes_and_skips_adj(tmp_path: Path):
    for folder, count in (("ancient building", 2), ("new building", 1), ("old tiger", 1), ("adj building", 3)):
        _write_images(tmp_path / "images" / folder, [f"{i}.jpg" for i in range(count)])
    states = build_dataset("mit_states", "all", root=tmp_path)
    assert len(states) == 4
    assert states.class_names == ["building", "tiger"]
    assert states.attribute_names == ["ancient", "new", "old"]
    assert states.labels.tolist() == [0, 0, 0, 1]
    assert [states[i]["attribute"] for i in range(4)] == [0, 0, 1, 2]


# --- CC3M / CC12M webdataset shards ---------------------------------------------------------------

def _write_shard(root: Path, shard: str, keys: list[str], *, corrupt: tuple[str, ...] = (),
                 without_caption: tuple[str, ...] = (), stats: bool = True) -> None:
    samples = [{"key": key, "jpg": b"\xff\xd8 broken" if key in corrupt else _jpeg_bytes()}
               | ({} if key in without_caption else {"txt": f"caption {key}"}) for key in keys]
    write_shard(root, shard, samples, failed=1, stats=stats)


@pytest.fixture()
def cc_root(tmp_path: Path) -> Path:
    _write_shard(tmp_path, "00000", ["000000000", "000000001", "000000002"], corrupt=("000000001",))
    _write_shard(tmp_path, "00001", ["000010000", "000010001"], without_caption=("000010000",))
    return tmp_path


def test_cc3m_stable_indices_and_skips(cc_root: Path):
    shards = build_dataset("cc3m", "train", root=cc_root, resampled=False)
    assert len(shards) == 5
    items = list(shards)
    assert [item["index"] for item in items] == [0, 2, 4]
    assert [item["caption"] for item in items] == ["caption 000000000", "caption 000000002", "caption 000010001"]
    assert all(item["label"] == -1 and item["image"].mode == "RGB" for item in items)
    assert shards.samples_skipped == 2 and shards.shards_truncated == 0
    assert list(shards.iter_captions()) == ["caption 000000000", "caption 000000001", "caption 000000002", "",
                                            "caption 000010001"]
    assert not isinstance(getattr(shards, "captions", None), list)


# Members sit at 512-byte blocks: sample 0 spans bytes 0-3583, sample 1's image data starts at 4096.
# tarfile raises on a cut inside member data but ends silently on a cut inside a header; both must count.
@pytest.mark.parametrize("cut_at", [3000, 4400], ids=["inside_header", "inside_image_data"])
def test_cc3m_truncated_shard_is_skipped_and_counted(cc_root: Path, cut_at: int):
    _write_shard(cc_root, "00002", [f"00002{i:04d}" for i in range(4)])
    shard = cc_root / "00002.tar"
    shard.write_bytes(shard.read_bytes()[:cut_at])
    shards = build_dataset("cc3m", "train", root=cc_root, resampled=False)
    indices = [item["index"] for item in shards]
    assert indices == [0, 2, 4, 5]
    assert shards.shards_truncated == 1 and shards.samples_skipped == 2 + 3
    captions = list(shards.iter_captions())
    assert len(captions) == 9 and captions[5] == "caption 000020000" and captions[6:] == ["", "", ""]


def test_cc3m_resampled_split_over_workers_counts_skips_in_main_process(cc_root: Path):
    shards = build_dataset("cc3m", "train", root=cc_root, seed=3)
    loader = DataLoader(shards, batch_size=None, num_workers=2, collate_fn=lambda item: item)
    first = [item["index"] for item in loader]
    assert len(first) == len(shards) and set(first) <= {0, 2, 4}
    assert shards.samples_skipped > 0  # incremented inside the workers
    assert [item["index"] for item in loader] == first  # same epoch, same draws
    shards.set_epoch(1)
    assert len([item["index"] for item in loader]) == len(shards)


def test_cc12m_needs_stats_or_num_samples(tmp_path: Path):
    _write_shard(tmp_path, "00000", ["a0", "a1"], stats=False)
    with pytest.raises(ValueError, match="num_samples"):
        build_dataset("cc12m", "train", root=tmp_path)
    shards = build_dataset("cc12m", "train", root=tmp_path, num_samples=2, resampled=False)
    assert len(shards) == 2 and [item["index"] for item in shards] == [0, 1]
    assert list(shards.iter_captions()) == ["caption a0", "caption a1"]
