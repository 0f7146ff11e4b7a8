"""Unreadable images are skipped and counted on every path: the batched decoder in the training process,
encoded reads in workers, shard streams, and evaluation; and the batched evaluation crop."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.engine_helpers import augment_recipe, typed_run_config
from xsample.data.decode import CorruptImageError, EncodedImage
from xsample.data.fixtures import jpeg_bytes, write_shard
from xsample.data.paper_datasets import ImageFileDataset
from xsample.data.webdataset_cc import CaptionedShards
from xsample.eval.features import encode_dataset
from xsample.tasks.compute import per_gpu_batch
from xsample.train.sampling import StreamedViews
from xsample.views.batched import BatchedEvalViews, BatchedViews
from xsample.views.pil import eval_transform

CPU = torch.device("cpu")
SUPCON = augment_recipe("supcon")


def _picture(seed: int, height: int = 60, width: int = 80) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _complete_but_undecodable() -> bytes:
    """Start and end markers of a JPEG around nothing decodable: it passes the workers undecoded."""
    return b"\xff\xd8" + b"\x00" * 300 + b"\xff\xd9"


def test_an_image_no_decoder_reads_in_the_training_process_is_replaced_and_flagged():
    views = BatchedViews(32, 2, SUPCON, encoded_source=True, decode_on_device=True)
    items = [views({"image": EncodedImage(data, f"image{k}"), "index": 10 + k, "label": k}, 5 + k)
             for k, data in enumerate([jpeg_bytes(_picture(0)), _complete_but_undecodable(), jpeg_bytes(_picture(2))])]
    assert all(item["image"].dim() == 1 for item in items), "handed over undecoded"
    batch = views.on_device(views.collate(items), CPU)
    assert batch["view1"].shape == (3, 3, 32, 32) and torch.isfinite(batch["view1"]).all()
    assert batch["skipped"].tolist() == [-1, 11, -1], "the unreadable sample's index is flagged"
    assert batch["index"].tolist() == [10, 12, 12] and batch["label"].tolist() == [0, 2, 2], "a stand-in's fields"
    assert not torch.equal(batch["view1"][1], batch["view1"][2]), "the stand-in keeps its own seed"
    assert views.describe()["decode_fallbacks"] == 1


def test_an_encoded_read_that_fails_is_skipped_like_a_corrupt_file(tmp_path):
    good, gone = tmp_path / "good.JPEG", tmp_path / "gone.JPEG"
    good.write_bytes(jpeg_bytes(_picture(0)))
    dataset = ImageFileDataset([str(gone), str(good)], [0, 1])
    dataset.keep_images_encoded()
    with pytest.raises(CorruptImageError, match=r"cannot read image .*gone\.JPEG .*No such file"):
        dataset.load_image(0)
    item = dataset[0]
    assert item["skipped"] == 0 and item["label"] == 1


def test_a_shard_member_undecodable_in_the_workers_is_skipped_and_counted(tmp_path):
    samples = [{"key": f"0000{k}", "jpg": jpeg_bytes(_picture(k)) if k != 2 else _complete_but_undecodable(),
                "txt": f"caption {k}"} for k in range(4)]
    write_shard(tmp_path, "00000", samples)
    shards = CaptionedShards("cc3m", tmp_path, resampled=False)
    shards.keep_images_encoded()
    views = BatchedViews(32, 2, SUPCON, encoded_source=True, augment_in_workers=True)  # decoded in the workers (CPU)
    items = list(StreamedViews(shards, views, seed=0))
    assert [item["index"] for item in items] == [0, 1, 3] and shards.samples_skipped == 1


class _Encoder(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def test_evaluation_leaves_unreadable_images_out_and_counts_them(tmp_path):
    files = []
    for k in range(5):
        path = tmp_path / f"{k}.JPEG"
        path.write_bytes(jpeg_bytes(_picture(k)) if k != 1 else b"broken")
        files.append(str(path))
    dataset = ImageFileDataset(files, [0, 1, 2, 3, 4])
    features, fields, skipped = encode_dataset(_Encoder(), dataset, eval_transform(32), batch_size=2, device=CPU)
    assert skipped == 1 and features.shape == (4, 3)
    assert fields["label"].tolist() == [0, 2, 3, 4], "the stand-in for the broken file is not counted twice"


def test_the_batched_evaluation_path_leaves_unreadable_images_out(tmp_path):
    files = []
    for k, data in enumerate([jpeg_bytes(_picture(0)), b"\xff\xd8 truncated", _complete_but_undecodable(),
                              jpeg_bytes(_picture(3))]):
        (tmp_path / f"{k}.JPEG").write_bytes(data)
        files.append(str(tmp_path / f"{k}.JPEG"))
    dataset = ImageFileDataset(files, [0, 1, 2, 3])
    dataset.keep_images_encoded()
    features, fields, skipped = encode_dataset(_Encoder(), dataset, BatchedEvalViews(32), batch_size=4, device=CPU)
    assert skipped == 2 and fields["label"].tolist() == [0, 3] and features.shape == (2, 3)


def test_the_batched_evaluation_crop_is_close_to_the_pil_transform():
    # Photographs are smooth at the pixel scale; noise would turn any sub-pixel difference into a large one.
    pictures = [_picture(k, 15 + 2 * k, 20 - 2 * k).resize((400 - 30 * k, 300 + 40 * k), Image.BICUBIC)
                for k in range(3)]
    evaluation = BatchedEvalViews(224)
    batch = evaluation.collate([{**evaluation.prepare(EncodedImage(jpeg_bytes(p, quality=95), "x")), "label": 0}
                                for p in pictures])
    assert batch["label"] == [0, 0, 0]
    ours, readable = evaluation.on_device(batch, CPU)
    reference = torch.stack([eval_transform(224)(Image.open(io.BytesIO(jpeg_bytes(p, quality=95))).convert("RGB"))
                             for p in pictures])
    assert readable.all() and ours.shape == reference.shape == (3, 3, 224, 224)
    # Not bit-equal (a continuous crop window, area-averaging resize), but the same picture.
    assert (ours - reference).abs().mean() < 0.05


def test_the_compute_table_measures_the_batch_one_gpu_holds():
    paper = typed_run_config("table=compute", "scale=paper", "scale.batch_size=4096")
    assert paper.resources.gpus_per_node == 1, "the timing job itself asks for one GPU"
    assert per_gpu_batch(paper) == (4096, 512), "the batch one of the training job's 8 GPUs holds"
    config = dataclasses.replace(paper, compute=dataclasses.replace(paper.compute, training_ranks=3))
    with pytest.raises(ValueError, match="not divisible by the training job's 3 ranks"):
        per_gpu_batch(config)
