"""The paper-scale path on miniature copies of the paper datasets (xsample.data.fixtures, scale=rehearsal).

Tests marked `rehearsal` run whole tables and belong to `make test-long`; the default suite keeps one
single-run table and the fast checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.engine_helpers import typed_run_config
from tests.rehearsal_helpers import IMAGES_PER_CLASS, REPO, fixture_roots, reproduce, run_results
from xsample.config import TextGraph
from xsample.data import build_dataset
from xsample.data.fixtures import ENV_NAMES, SHAPE_WNIDS, main, write_fixtures
from xsample.train.distributed import DistInfo
from xsample.train.side_information import class_embeddings
from xsample.train.skipped import SkippedSamples, TooManySkippedError

TABLES = sorted(p.stem for p in (REPO / "configs" / "table").glob("*.yaml"))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fixtures")
    write_fixtures(directory, images_per_class=IMAGES_PER_CLASS, image_px=64)
    return directory


def test_fixtures_hold_every_paper_dataset_in_its_layout(fixtures: Path):
    roots = fixture_roots(fixtures)
    assert sorted(roots) == sorted(f"XSAMPLE_{name.upper()}_ROOT" for name in ENV_NAMES)
    splits = {"imagenet": "train", "imagenet_real": "val", "imagenet9": "mixed_rand", "objectnet": "test",
              "mit_states": "all", "cc3m": "train", "cc12m": "train"}
    sizes = {name: len(build_dataset(name, split, root=roots[f"XSAMPLE_{name.upper()}_ROOT"]))
             for name, split in splits.items()}
    assert sizes["imagenet"] == IMAGES_PER_CLASS * len(SHAPE_WNIDS) and min(sizes.values()) > 0
    imagenet = fixtures / "imagenet"
    assert not (imagenet / "LOC_synset_mapping.txt").exists()
    assert sorted(p.name for p in (imagenet / "train").iterdir())[0] == "n01440764"
    assert next((imagenet / "val" / "n01440764").iterdir()).name.startswith("ILSVRC2012_val_")
    assert len(json.loads((fixtures / "imagenet9" / "in_to_in9.json").read_text())) == 1000
    frame = Image.open(next((fixtures / "objectnet" / "images" / "tench").iterdir())).convert("RGB")
    assert frame.getpixel((0, 0)) == (255, 0, 0) and frame.getpixel((frame.width - 1, 5)) == (255, 0, 0)
    stats = json.loads((fixtures / "cc3m" / "00000_stats.json").read_text())
    assert stats["count"] > stats["successes"]  # failed downloads: counted, absent from the shard
    assert {p.suffix for p in (fixtures / "cc12m").iterdir()} == {".tar", ".json"}


def test_fixtures_cli_refuses_a_directory_that_holds_them(fixtures: Path):
    with pytest.raises(SystemExit, match="already holds"):
        main([str(fixtures)])


class _RecordingEncoder:
    def __init__(self):
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts += list(texts)
        return torch.ones(len(texts), 4)


def test_class_name_graph_captions_are_readable_without_synset_mapping(fixtures: Path, monkeypatch):
    encoder = _RecordingEncoder()
    monkeypatch.setattr("xsample.train.side_information.load_text_encoder", lambda name: encoder)
    dataset = build_dataset("imagenet", "train", root=fixtures / "imagenet")
    config = typed_run_config("table='1'", "method=xclr", graph=TextGraph("class_names", "any", "a photo of a {}"))
    class_embeddings(config, dataset)
    assert encoder.texts[:3] == ["a photo of a tench", "a photo of a goldfish", "a photo of a brambling"]
    assert not any("n0" in text for text in encoder.texts)


def test_skipped_samples_count_once_and_fail_past_the_limit():
    single = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    skipped = SkippedSamples(None, 1000, 0.002)
    skipped.add(torch.tensor([-1, 7, -1]))
    skipped.add(torch.tensor([7, 9]))  # position 7 again, as in a later epoch
    assert skipped.check(single, samples_seen=100) == 2
    skipped.add(torch.tensor([11]))
    with pytest.raises(TooManySkippedError, match=r"3 of 1000 .*runtime.max_skipped_fraction=0.002"):
        skipped.check(single, samples_seen=100)


@pytest.mark.slow
def test_rehearsal_table1_run_skips_and_counts_a_corrupt_jpeg(fixtures: Path, tmp_path: Path):
    """The default suite's one rehearsal run: X-CLR's row of Table 1 through the multirun path, with one
    truncated JPEG in the ImageNet train folder (batch 16 of 80 images: every file is read)."""
    broken = sorted((fixtures / "imagenet" / "train" / "n01443537").iterdir())[3]
    original = broken.read_bytes()
    broken.write_bytes(original[: len(original) // 3])  # truncated, as an interrupted copy leaves it
    try:
        out = reproduce(fixtures, tmp_path, "-m", "table=1", "method=xclr", "seed=0", "scale.batch_size=16")
    finally:
        broken.write_bytes(original)
    assert out.returncode == 0, out.stdout + out.stderr
    (record,) = run_results(tmp_path / "table1_rehearsal").values()
    assert record["status"] == "completed", record.get("error")
    assert record["data"]["samples_skipped"] == 1
    assert broken.name in out.stdout + out.stderr  # the log names the file
    evaluations = set(record["metrics"]) - {"graph_diagnostics"}  # X-CLR's target shares sit beside them
    assert evaluations == {"imagenet", "imagenet_real", "imagenet9", "objectnet", "mit_states", "few_label"}
    assert record["config"]["data"] | {"root": None} == {"name": "imagenet", "root": None, "image_size": 32,
                                                        "options": {}, "fraction": 1.0}
    assert (tmp_path / "figures" / "rehearsal" / "table1_rehearsal.md").is_file()


@pytest.mark.rehearsal
@pytest.mark.slow
@pytest.mark.parametrize("table", TABLES)
def test_every_table_completes_under_scale_rehearsal(fixtures: Path, tmp_path: Path, table: str):
    out = reproduce(fixtures, tmp_path, "-m", f"table={table}")
    assert out.returncode == 0, out.stdout + out.stderr
    results = run_results(tmp_path / f"table{table}_rehearsal")
    failed = {name: record.get("error") for name, record in results.items() if record["status"] != "completed"}
    assert results and not failed
    stem = f"table{table}" if table.isdigit() else table  # report files are named after what they hold
    assert (tmp_path / "figures" / "rehearsal" / f"{stem}_rehearsal.md").is_file()


@pytest.mark.rehearsal
@pytest.mark.slow
def test_table4_noisy_rows_train_on_other_captions_than_the_clean_rows(fixtures: Path, tmp_path: Path):
    """Table 4 at paper scale reads CC3M shards: its noise=0.5 X-CLR row must build its graph from other
    captions than the clean row (same seed, same batches: only the captions differ), in its own cache."""
    out = reproduce(fixtures, tmp_path, "-m", "table=4", "row=xclr_clean,xclr_noisy")
    assert out.returncode == 0, out.stdout + out.stderr
    results = run_results(tmp_path / "table4_rehearsal")
    by_noise = {record["config"]["data"]["options"]["caption_noise"]: record["metrics"]["graph_diagnostics"]
                for record in results.values()}
    assert sorted(by_noise) == [0.0, 0.5]
    assert by_noise[0.0]["rows_fingerprint"] != by_noise[0.5]["rows_fingerprint"]
    assert len(list((tmp_path / "cache").iterdir())) == 2, "the noisy captions have their own cache"


def test_finetune_rows_launch_in_a_phase_after_their_base_rows(tmp_path):
    from experiments.plan import plan_sweep

    def phases(*overrides: str, multirun: bool = True) -> list[list[str]]:
        plan = plan_sweep(["launcher=local", f"paths.sweeps={tmp_path}", *overrides], multirun=multirun)
        return [sorted(run.name for run in phase) for phase in plan.phases()]

    base = [f"{row}_seed{seed}" for seed in (0, 1) for row in ("simclr_imagenet_base_simclr", "untrained_imagenet_untrained")]
    continued = sorted(f"{method}_imagenet_continued_from_base_seed{seed}" for seed in (0, 1)
                       for method in ("simclr", "supcon", "xclr"))
    assert phases("table=finetune", "scale=rehearsal", "seed=0,1") == [sorted(base), continued]  # baselines need no base
    # One fine-tuning run: its base runs first.
    assert phases("table=finetune", "row=finetune_xclr", multirun=False) == [
        ["simclr_imagenet_base_simclr_seed0"], ["xclr_imagenet_continued_from_base_seed0"]]
    assert len(phases("table=fig5")) == 1
