"""Feature extraction and run_evaluations end to end on fake in-memory datasets with a tiny random encoder."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_tensor

from xsample.eval import extract_features, run_evaluations, validate_evaluations

CLASS_COLOURS = [(230, 30, 30), (30, 200, 40), (40, 40, 220), (220, 220, 30)]
PROBE = {"epochs": 20, "learning_rates": [0.3, 0.03], "batch_size": 64, "val_fraction": 0.2}


class FakeShapes(Dataset):
    """Items following the data contract: class = colour of the left half, attribute = grey level of the right."""

    class_names = ["red", "green", "blue", "yellow"]
    attribute_names = ["dark", "mid", "light"]

    def __init__(self, size: int, seed: int, label_of=lambda label: label, classes=(0, 1, 2, 3)):
        rng = np.random.default_rng(seed)
        self.labels = rng.choice(classes, size=size)
        self.attributes = rng.integers(0, 3, size=size)
        self.noise = rng.integers(-20, 20, size=(size, 8, 8, 3))
        self.label_of = label_of

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        label, attribute = int(self.labels[index]), int(self.attributes[index])
        pixels = np.zeros((8, 8, 3), dtype=np.int64)
        pixels[:, :4] = CLASS_COLOURS[label]
        pixels[:, 4:] = 40 + 80 * attribute
        image = Image.fromarray(np.clip(pixels + self.noise[index], 0, 255).astype(np.uint8))
        real_labels = [] if index % 5 == 0 else [label] if index % 5 != 1 else [label, (label + 1) % 4]
        return {"image": image, "index": index, "label": self.label_of(label), "caption": "",
                "attribute": attribute, "real_labels": real_labels}


class CountingEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 16))
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(images)
        return self.net(images)


class FakeBuilder:
    """Stands in for xsample.data.build_dataset; records every dataset it builds."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __call__(self, name: str, split: str, root=None, **options) -> Dataset:
        self.calls.append((name, split, root, options))
        if name != "fake":
            raise ValueError(f"unknown dataset {name!r}")
        seed = {"train": 0, "test": 1, "in9_original": 2, "mixed_same": 3, "mixed_rand": 4, "objectnet": 5}[split]
        if split == "objectnet":  # only probe classes 0 and 2 exist there, relabelled 0 and 1
            dataset = FakeShapes(options.get("size", 80), seed, label_of=lambda label: label // 2, classes=(0, 2))
            dataset.imagenet_class_map = [0, -1, 1, -1]  # what a paper-scale loader derives from its mapping files
            return dataset
        if split in ("in9_original", "mixed_same", "mixed_rand"):  # two super-classes: {0, 1} -> 0, {2, 3} -> 1
            return FakeShapes(options.get("size", 100), seed, label_of=lambda label: label // 2)
        return FakeShapes(options.get("size", 200), seed)


def _spec(split: str, **options) -> dict:
    return {"name": "fake", "split": split, "options": options}


TRAIN = _spec("train", size=400)
EVALUATIONS = [
    {"name": "imagenet", "train": TRAIN, "test": _spec("test")},
    {"name": "imagenet_real", "train": TRAIN, "test": _spec("test")},
    {"name": "imagenet9", "train": TRAIN, "class_map": [0, 0, 1, 1],
     "variants": {"original": _spec("in9_original"), "mixed_same": _spec("mixed_same"), "mixed_rand": _spec("mixed_rand")}},
    {"name": "objectnet", "train": TRAIN, "test": _spec("objectnet"), "class_map": [0, -1, 1, -1]},
    {"name": "mit_states", "data": _spec("train", size=400)},
]


def test_extract_features_keeps_order_list_fields_and_training_mode():
    encoder = CountingEncoder().train()
    dataset = FakeShapes(13, seed=0)
    features, extras = extract_features(encoder, dataset, to_tensor, batch_size=4, device="cpu",
                                        extra_keys=("label", "real_labels"))
    assert features.shape == (13, 16) and features.dtype == torch.float32 and not features.requires_grad
    assert extras["label"].tolist() == [int(label) for label in dataset.labels]
    assert extras["real_labels"] == [dataset[i]["real_labels"] for i in range(13)]
    assert encoder.training and encoder.images_seen == 13
    encoder.eval()
    assert torch.allclose(features[5], encoder(to_tensor(dataset[5]["image"])[None])[0].detach(), atol=1e-6)


def test_extract_features_names_a_missing_field():
    with pytest.raises(KeyError, match="objectness"):
        extract_features(CountingEncoder(), FakeShapes(3, 0), to_tensor, batch_size=2, device="cpu",
                         extra_keys=("objectness",))


def test_run_evaluations_end_to_end_encodes_each_dataset_once():
    encoder, builder = CountingEncoder(), FakeBuilder()
    metrics, details = run_evaluations(encoder, EVALUATIONS, device="cpu", probe_config=PROBE, transform=to_tensor,
                                       dataset_builder=builder, batch_size=64)
    assert set(metrics) == {"imagenet", "imagenet_real", "imagenet9", "objectnet", "mit_states"}
    assert set(metrics["imagenet"]) == {"top1", "knn_top1"}
    assert set(metrics["imagenet9"]) == {"original", "mixed_same", "mixed_rand", "bg_gap"}
    assert metrics["imagenet9"]["bg_gap"] == pytest.approx(metrics["imagenet9"]["mixed_same"] - metrics["imagenet9"]["mixed_rand"])
    assert set(metrics["mit_states"]) == {"objects", "attributes"}
    # Colours and grey levels survive a random encoder: every probe is far above chance.
    for name, metric, chance in [("imagenet", "top1", 25), ("imagenet", "knn_top1", 25), ("imagenet_real", "top1", 25),
                                 ("imagenet9", "original", 50), ("objectnet", "top1", 50),
                                 ("mit_states", "objects", 25), ("mit_states", "attributes", 33)]:
        assert metrics[name][metric] > chance + 40, (name, metric, metrics)
    # Six distinct dataset specs, each built and encoded once however many evaluations use it.
    built = sorted(call[1] for call in builder.calls)
    assert built == ["in9_original", "mixed_rand", "mixed_same", "objectnet", "test", "train"]
    assert encoder.images_seen == 400 + 200 + 3 * 100 + 80
    # One ImageNet probe, shared by the evaluations that reuse it.
    shared = [details[name]["probe"] for name in ("imagenet", "imagenet_real", "imagenet9", "objectnet")]
    assert all(probe == shared[0] for probe in shared)
    assert details["imagenet_real"]["scored"] == 160  # every fifth test item has an empty ReaL list


def test_few_label_and_heldout_classes_end_to_end():
    """few_label probes with a class-balanced fraction of the labels (the same items for every run), averaged
    over draws; heldout_classes fits its probe and k-NN bank on one half of its dataset and scores the other."""
    evaluations = [
        {"name": "few_label", "train": TRAIN, "test": _spec("test"), "fractions": [0.01, 0.1], "draws": 3},
        {"name": "heldout_classes", "data": _spec("test")},
    ]
    builder = FakeBuilder()
    metrics, details = run_evaluations(CountingEncoder(), evaluations, device="cpu", probe_config=PROBE,
                                       transform=to_tensor, dataset_builder=builder, batch_size=64)
    assert set(metrics["few_label"]) == {"top1_1pct", "top1_10pct"}
    assert set(metrics["heldout_classes"]) == {"top1", "knn_top1"}
    # 1% of 400 items over 4 classes: one labelled item per class (at least one each), 10%: ten per class.
    assert details["few_label"]["labelled_items_per_draw"] == {"top1_1pct": 4, "top1_10pct": 40}
    assert details["heldout_classes"]["train_size"] == details["heldout_classes"]["test_size"] == 100
    for name, metric in [("few_label", "top1_1pct"), ("few_label", "top1_10pct"), ("heldout_classes", "top1"),
                         ("heldout_classes", "knn_top1")]:
        assert metrics[name][metric] > 25 + 40, (name, metric, metrics)
    # The labelled items depend on the draw, not on the run's seed: runs are probed with the same labels.
    other_seed = run_evaluations(CountingEncoder(), evaluations[:1], device="cpu", probe_config=PROBE,
                                 transform=to_tensor, dataset_builder=FakeBuilder(), batch_size=64, seed=7)[0]
    assert other_seed["few_label"] == metrics["few_label"]


def test_probe_choice_never_depends_on_the_test_set():
    def run(test_split: str) -> tuple[dict, dict]:
        evaluations = [{"name": "imagenet", "train": TRAIN, "test": _spec(test_split), "knn": False}]
        return run_evaluations(CountingEncoder(), evaluations, device="cpu", probe_config=PROBE, transform=to_tensor,
                               dataset_builder=FakeBuilder(), batch_size=64)

    metrics_test, details_test = run("test")
    metrics_other, details_other = run("mixed_rand")
    assert details_test["imagenet"]["probe"] == details_other["imagenet"]["probe"]
    assert "knn_top1" not in metrics_test["imagenet"]


def test_data_roots_fill_missing_roots():
    builder = FakeBuilder()
    run_evaluations(CountingEncoder(), [{"name": "mit_states", "data": _spec("train", size=100)}], device="cpu",
                    probe_config=PROBE, transform=to_tensor, dataset_builder=builder, data_roots={"fake": "/data/fake"})
    assert builder.calls == [("fake", "train", "/data/fake", {"size": 100})]


def _with(position: int, path: tuple, value) -> list[dict]:
    evaluations = copy.deepcopy(EVALUATIONS)
    target = evaluations[position]
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return evaluations


@pytest.mark.parametrize(("evaluations", "message"), [
    (_with(0, ("name",), "imagenet_v2"), r"evaluations\[0\]\.name: unknown evaluation 'imagenet_v2'"),
    (_with(0, ("test",), None), r"evaluations\[0\] \(imagenet\)\.test is missing"),
    (_with(0, ("tset",), {}), r"evaluations\[0\] \(imagenet\): unknown field\(s\) \['tset'\]"),
    (_with(0, ("knn", ), {"k": 0}), r"evaluations\[0\] \(imagenet\)\.knn\.k must be a positive integer"),
    (_with(1, ("train",), {"name": "fake"}), r"evaluations\[1\] \(imagenet_real\)\.train\.split is missing"),
    (_with(2, ("variants", "mixed_rand"), None), r"evaluations\[2\] \(imagenet9\)\.variants must include"),
    (_with(2, ("variants", "original", "options"), [1]), r"variants\.original\.options must be a mapping"),
    (_with(3, ("class_map",), [0, "a"]), r"evaluations\[3\] \(objectnet\)\.class_map must be null, 'from_dataset' or a list"),
    (_with(4, ("train_fraction",), 1.5), r"evaluations\[4\] \(mit_states\)\.train_fraction must be a number"),
    (_with(1, ("name",), "imagenet"), r"evaluations\[1\]\.name: evaluation 'imagenet' appears twice"),
    ([{"name": "few_label", "train": TRAIN, "test": TRAIN, "fractions": [0.1, 1.0]}],
     r"evaluations\[0\] \(few_label\)\.fractions must be a list of distinct fractions in \(0, 1\)"),
    ([{"name": "few_label", "train": TRAIN, "test": TRAIN, "draws": 0}],
     r"evaluations\[0\] \(few_label\)\.draws must be a positive integer"),
    ([{"name": "heldout_classes", "data": TRAIN, "knn": {"k": -1}}],
     r"evaluations\[0\] \(heldout_classes\)\.knn\.k must be a positive integer"),
])
def test_bad_specs_raise_errors_naming_the_field(evaluations, message):
    with pytest.raises(ValueError, match=message):
        validate_evaluations(evaluations)
    builder = FakeBuilder()
    with pytest.raises(ValueError, match=message):
        run_evaluations(CountingEncoder(), evaluations, device="cpu", probe_config=PROBE, transform=to_tensor,
                        dataset_builder=builder)
    assert builder.calls == [], "specs are validated before any dataset is built"


def test_bad_probe_config_and_class_map_length_are_reported():
    with pytest.raises(ValueError, match=r"probe_config: missing \['epochs'\], unknown \['lr'\]"):
        validate_evaluations(EVALUATIONS, {"learning_rates": [0.1], "batch_size": 8, "lr": 1})
    with pytest.raises(ValueError, match="one target"):
        run_evaluations(CountingEncoder(), _with(3, ("class_map",), [0, 1]), device="cpu", probe_config=PROBE,
                        transform=to_tensor, dataset_builder=FakeBuilder())


def test_class_map_from_the_test_dataset_equals_the_declared_one():
    declared = [EVALUATIONS[0], EVALUATIONS[3]]
    from_dataset = [EVALUATIONS[0], dict(EVALUATIONS[3], class_map="from_dataset")]
    results = [run_evaluations(CountingEncoder(), specs, device="cpu", probe_config=PROBE, transform=to_tensor,
                               dataset_builder=FakeBuilder(), batch_size=64)[0] for specs in (declared, from_dataset)]
    assert results[0]["objectnet"] == results[1]["objectnet"]


class ClassVectorEncoder(nn.Module):
    """Maps an image to a fixed vector of its class (read from the left half's colour): class means are exact."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.vectors = vectors
        self.colours = torch.tensor(CLASS_COLOURS, dtype=torch.float32) / 255

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        left = images[:, :, :, :4].mean(dim=(2, 3))
        return self.vectors[torch.cdist(left, self.colours).argmin(dim=1)]


def test_graph_alignment_reads_the_graph_values_not_only_the_classes():
    """A representation whose class means are the class names' text embeddings agrees with the text graph
    (Pearson 100); the same vectors given to the wrong classes keep every value and class identity and lose it."""
    from xsample.graph import class_caption_embeddings, load_text_encoder

    text = class_caption_embeddings(FakeShapes.class_names, load_text_encoder(), "a photo of a {}")
    evaluations = [{"name": "graph_alignment", "data": _spec("test")}]

    def alignment(vectors: torch.Tensor) -> float:
        metrics, details = run_evaluations(ClassVectorEncoder(vectors), evaluations, device="cpu", probe_config=PROBE,
                                           transform=to_tensor, dataset_builder=FakeBuilder(), batch_size=64)
        assert details["graph_alignment"]["classes"] == 4
        return metrics["graph_alignment"]["pearson"]

    assert alignment(text) == pytest.approx(100.0, abs=1e-3)
    assert alignment(text[[1, 2, 3, 0]]) < 50


class FamilyShapes(FakeShapes):
    """FakeShapes whose classes come in two families, {red, green} and {blue, yellow}."""

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        return {**item, "family": item["label"] // 2}


def _family_builder(name: str, split: str, root=None, **options) -> Dataset:
    """Pretraining saw red and blue ("seen"); green and yellow are held out ("heldout")."""
    return FamilyShapes(120, seed={"seen": 0, "heldout": 1}[split], classes=(0, 2) if split == "seen" else (1, 3))


def test_family_knn_puts_a_held_out_class_among_its_seen_relatives_only_when_the_representation_does():
    """Known answer: an encoder that maps each held-out class next to its seen sibling names every held-out
    image's family (100); one that maps it next to the other family's seen class names none (0)."""
    evaluations = [{"name": "heldout_classes", "data": _spec("heldout"), "seen": _spec("seen"), "family_key": "family"}]

    def family_top1(vectors: list[list[float]]) -> float:
        metrics, details = run_evaluations(ClassVectorEncoder(torch.tensor(vectors)), evaluations, device="cpu",
                                           probe_config=PROBE, transform=to_tensor, dataset_builder=_family_builder,
                                           batch_size=64)
        assert details["heldout_classes"]["family_scored"] == 120
        return metrics["heldout_classes"]["family_knn_top1"]

    # rows: red, green, blue, yellow
    assert family_top1([[1.0, 0.0], [0.9, 0.2], [0.0, 1.0], [0.2, 0.9]]) == pytest.approx(100.0)
    assert family_top1([[1.0, 0.0], [0.2, 0.9], [0.0, 1.0], [0.9, 0.2]]) == pytest.approx(0.0)


def test_family_knn_needs_knn_settings():
    with pytest.raises(ValueError, match=r"family_knn_top1 \(seen\) is a k-NN vote; give knn settings"):
        validate_evaluations([{"name": "heldout_classes", "data": _spec("heldout"), "seen": _spec("seen"),
                               "knn": False}])


class CountingBuilder(FakeBuilder):
    """FakeBuilder whose datasets count the items read from them."""

    def __init__(self):
        super().__init__()
        self.items_read = 0

    def __call__(self, name: str, split: str, root=None, **options) -> Dataset:
        dataset, builder = super().__call__(name, split, root, **options), self

        class Counted(type(dataset)):
            def __getitem__(self, index: int) -> dict:
                builder.items_read += 1
                return super().__getitem__(index)

        dataset.__class__ = Counted
        return dataset


@pytest.mark.parametrize("limit_bytes, read_again", [(None, 0), (3 * 8 * 8 * 4 * 300, 400)])
def test_small_datasets_are_transformed_once_for_every_run_of_a_process(monkeypatch, limit_bytes, read_again):
    """A local sweep's runs share their evaluation inputs (the transform is the same, the encoder is not);
    a dataset over the size limit (here the 400-item train split) is read again by every run."""
    from xsample.eval import features

    monkeypatch.setattr(features, "_prepared", features.OrderedDict())
    if limit_bytes is not None:
        monkeypatch.setattr(features, "PREPARED_DATASET_LIMIT_BYTES", limit_bytes)
    evaluations = EVALUATIONS[:1]
    builder = CountingBuilder()
    first, _ = run_evaluations(CountingEncoder(), evaluations, device="cpu", probe_config=PROBE, transform=to_tensor,
                               dataset_builder=builder, batch_size=64, image_size=8)
    assert builder.items_read >= 400 + 200
    builder.items_read = 0
    other = CountingEncoder()  # features that say nothing: what it scores must be its own, not the first's
    with torch.no_grad():
        other.net[3].weight.zero_()
    second, _ = run_evaluations(other, evaluations, device="cpu", probe_config=PROBE, transform=to_tensor,
                                dataset_builder=builder, batch_size=64, image_size=8)
    assert read_again <= builder.items_read < read_again + 10  # (a few single items are looked at, not encoded)
    reference, _ = run_evaluations(other, evaluations, device="cpu", probe_config=PROBE, transform=to_tensor,
                                   dataset_builder=FakeBuilder(), batch_size=64)
    assert second == reference and second != first
