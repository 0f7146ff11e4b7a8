import copy
import math
import socket

import pytest
import torch

from xsample.losses import clip_loss
from xsample.models import MAX_LOGIT_SCALE, CLIPModel, ContrastiveModel, ProjectionHead, build_backbone
from xsample.models import backbones as backbones_module

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
START_OF_TEXT, END_OF_TEXT = 49406, 49407


def _tiny_clip(embed_dim=24, **kwargs):
    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet_tiny", small_image_stem=True)
    return CLIPModel(backbone, dim, embed_dim, TINY_TEXT, **kwargs)


def test_resnet50_gives_pooled_2048_features_without_classifier():
    backbone, dim = build_backbone("resnet50")
    assert dim == 2048
    assert isinstance(backbone.fc, torch.nn.Identity)
    assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, 2048)


@pytest.mark.parametrize(("stride", "size"), [(1, 32), (2, 32), (1, 28)])
def test_tiny_resnet_small_image_stem_accepts_channels_last(stride, size):
    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet_tiny", small_image_stem=True, stem_stride=stride)
    assert dim == 128
    assert backbone.conv1.kernel_size == (3, 3) and backbone.conv1.stride == (stride, stride)
    assert isinstance(backbone.maxpool, torch.nn.Identity)
    backbone.eval()
    images = torch.randn(4, 3, size, size)
    expected = backbone(images)
    assert expected.shape == (4, dim)
    torch.testing.assert_close(backbone(images.contiguous(memory_format=torch.channels_last)), expected,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet18d"])  # plain 7x7 stem and timm's deep stem
def test_small_image_stem_works_on_any_timm_resnet(name):
    backbone, dim = build_backbone(name, small_image_stem=True)
    assert isinstance(backbone.conv1, torch.nn.Conv2d) and backbone.conv1.stride == (1, 1)
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_tiny_resnet_default_stem_handles_larger_images():
    backbone, dim = build_backbone("resnet_tiny")
    assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, dim)


def test_backbone_configuration_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown backbone 'resnet_nope'"):
        build_backbone("resnet_nope")
    with pytest.raises(ValueError, match="timm ResNets only"):
        build_backbone("mobilenetv3_small_050", small_image_stem=True)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("resnet_tiny", pretrained=True)
    with pytest.raises(ValueError, match="small_image_stem"):
        build_backbone("resnet50", small_image_stem=True, pretrained=True)
    with pytest.raises(ValueError, match="stem_stride"):
        build_backbone("resnet_tiny", stem_stride=2)


def test_pretrained_download_failure_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(backbones_module.timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="pretrained weights for 'resnet50'.*pretrained=false"):
        build_backbone("resnet50", pretrained=True)


@pytest.mark.parametrize(("num_layers", "batch_norm", "linears", "norms"), [(1, True, 1, 0), (2, True, 2, 1),
                                                                           (3, True, 3, 2), (2, False, 2, 0)])
def test_projection_head_layers_and_dims(num_layers, batch_norm, linears, norms):
    head = ProjectionHead(40, 32, 8, num_layers=num_layers, batch_norm=batch_norm)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == linears
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == norms
    assert head(torch.randn(5, 40)).shape == (5, 8)


def test_projection_head_rejects_bad_dims():
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(8, 8, 8, num_layers=0)


def test_contrastive_model_projections_and_probe_features():
    backbone, dim = build_backbone("resnet_tiny", small_image_stem=True)
    model = ContrastiveModel(backbone, dim, ProjectionHead(dim, 256, 64))
    images = torch.randn(4, 3, 32, 32)
    assert model(images).shape == (4, 64) and model.features(images).shape == (4, dim)
    with pytest.raises(ValueError, match="in_dim=128"):
        ContrastiveModel(backbone, dim, ProjectionHead(64, 256, 64))


def test_tokenizer_ships_its_vocabulary_and_never_touches_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the tokenizer tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = _tiny_clip()
    tokens = model.tokenize(["a large red star", "a small blue circle " * 20])
    assert tokens.dtype == torch.int64 and tokens.shape == (2, 16)
    assert (tokens[:, 0] == START_OF_TEXT).all()
    assert tokens[0].tolist().index(END_OF_TEXT) == 5 and (tokens[0, 6:] == 0).all()
    assert tokens[1, -1] == END_OF_TEXT, "a truncated caption keeps its end-of-text token"
    with pytest.raises(ValueError, match="list of strings"):
        model.tokenize([3, 4])


def test_clip_forward_gives_unit_features_and_scale_and_trains_every_part():
    model = _tiny_clip()
    images, tokens = torch.randn(3, 3, 32, 32), model.tokenize(["a red star", "a blue disk", "green"])
    image_features, text_features, scale = model(images, tokens)
    assert image_features.shape == text_features.shape == (3, 24)
    torch.testing.assert_close(image_features.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(text_features.norm(dim=1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    clip_loss(image_features, text_features, logit_scale=scale).backward()
    # Not "every gradient is non-zero": timm zero-initialises each block's last BN scale, so at init the
    # residual branches' inner convs get exactly zero gradient.
    assert all(parameter.grad is not None for parameter in model.parameters())
    for part in (model.text, model.image_projection, model.backbone.conv1):
        assert all(parameter.grad.abs().sum() > 0 for parameter in part.parameters())
    assert model.features(images).shape == (3, 128)
    assert model.encode_image(images).shape == model.encode_text(tokens).shape == (3, 24)


def test_clip_logit_scale_is_clamped_to_100_and_still_learns_at_the_bound():
    model = _tiny_clip()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    image_features, text_features, scale = model(torch.randn(2, 3, 32, 32), model.tokenize(["a", "b"]))
    assert scale.item() == pytest.approx(100.0)
    assert model.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)
    clip_loss(image_features, text_features, logit_scale=scale).backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.item() != 0
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    assert model(torch.randn(2, 3, 32, 32), model.tokenize(["a", "b"]))[2].item() == pytest.approx(1.0)


def test_clip_state_dict_round_trip_and_copy():
    model = _tiny_clip()
    assert not any("tokenizer" in key for key in model.state_dict())
    clone = _tiny_clip()
    with torch.no_grad():
        for parameter in clone.parameters():
            parameter.add_(1.0)
    clone.load_state_dict(model.state_dict())
    model.eval()
    clone.eval()
    tokens = model.tokenize(["a photo of a shirt"])
    torch.testing.assert_close(clone.encode_text(tokens), model.encode_text(tokens))
    assert torch.equal(copy.deepcopy(model).tokenize(["x"]), model.tokenize(["x"]))


def test_clip_configuration_errors_name_the_fix():
    backbone, dim = build_backbone("resnet_tiny", small_image_stem=True)
    with pytest.raises(ValueError, match="unknown CLIP text config keys \\['depth'\\]"):
        CLIPModel(backbone, dim, 16, {**TINY_TEXT, "depth": 2})
    with pytest.raises(ValueError, match="vocab_size=49408"):
        CLIPModel(backbone, dim, 16, {**TINY_TEXT, "vocab_size": 1000})
    with pytest.raises(ValueError, match="init_logit_scale"):
        CLIPModel(backbone, dim, 16, TINY_TEXT, init_logit_scale=math.log(1000.0))
    model = CLIPModel(backbone, dim, 16, TINY_TEXT)
    with pytest.raises(ValueError, match="model.tokenize"):
        model.encode_text(torch.zeros(2, 40, dtype=torch.long))


def test_zero_shot_classifiers_average_each_template_set_through_the_text_tower():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from xsample.data.shapes import ZERO_SHOT_TEMPLATES
    from xsample.eval.zero_shot import TEMPLATE_SETS, zero_shot_classifier, zero_shot_templates

    model, names = _tiny_clip().eval(), ["circle", "ring", "square"]
    assert zero_shot_templates("openai_imagenet") is OPENAI_IMAGENET_TEMPLATES and len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert [template("{}") for template in zero_shot_templates("single")] == ["a photo of a {}."]

    def expected(prompts_per_class):
        with torch.no_grad():
            means = [model.encode_text(model.tokenize(prompts), normalize=True).mean(dim=0) for prompts in prompts_per_class]
        return torch.nn.functional.normalize(torch.stack(means), dim=1)

    classifiers = {name: zero_shot_classifier(model, names, name, torch.device("cpu")) for name in TEMPLATE_SETS}
    torch.testing.assert_close(classifiers["single"], expected([[f"a photo of a {name}."] for name in names]))
    torch.testing.assert_close(classifiers["shapes_captions"],
                               expected([[template.format(name) for template in ZERO_SHOT_TEMPLATES] for name in names]))
    torch.testing.assert_close(classifiers["openai_imagenet"],
                               expected([[template(name) for template in OPENAI_IMAGENET_TEMPLATES] for name in names]))
    assert not torch.allclose(classifiers["single"], classifiers["openai_imagenet"], atol=1e-3)
