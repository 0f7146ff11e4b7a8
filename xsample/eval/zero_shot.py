"""Zero-shot classification prompts (``eval.zero_shot.templates``) and the class text classifier built from them.

- ``openai_imagenet``: open_clip's 80 OpenAI ImageNet templates (``open_clip.zero_shot_metadata``), averaged
  per class as CLIP's paper and open_clip's own evaluation do; the zero-shot numbers in the literature use it.
- ``single``: one prompt, "a photo of a {}." (taken from that list).
- ``shapes_captions``: the shapes world's captions with the attributes left out
  (``xsample.data.shapes.ZERO_SHOT_TEMPLATES``): a model trained on those captions never saw "a sculpture of".

The classifier is open_clip's ``build_zero_shot_classifier``: per class the normalised mean of the normalised
prompt embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

TEMPLATE_SETS = ("openai_imagenet", "single", "shapes_captions")
SINGLE_PROMPT = "a photo of a {}."


def zero_shot_problem(config: dict[str, Any]) -> str | None:
    """The line that says ``eval.zero_shot.templates`` names no template set, or None."""
    templates = config["eval"]["zero_shot"]["templates"]
    if templates in TEMPLATE_SETS:
        return None
    return f"eval.zero_shot.templates={templates!r} is not a template set; choose one of {', '.join(TEMPLATE_SETS)}"


def zero_shot_templates(name: str) -> Sequence[str | Callable[[str], str]]:
    """The prompts of template set ``name`` (format strings or open_clip's callables)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from xsample.data.shapes import ZERO_SHOT_TEMPLATES as SHAPES_TEMPLATES

    if name == "openai_imagenet":
        return OPENAI_IMAGENET_TEMPLATES
    if name == "single":
        return [template for template in OPENAI_IMAGENET_TEMPLATES if template("{}") == SINGLE_PROMPT]
    if name == "shapes_captions":
        return SHAPES_TEMPLATES
    raise ValueError(f"eval.zero_shot.templates={name!r} is not a template set; choose one of {', '.join(TEMPLATE_SETS)}")


def zero_shot_classifier(model: nn.Module, class_names: Sequence[str], templates: str,
                         device: torch.device) -> torch.Tensor:
    """[C, E] class embeddings of a CLIP model (``tokenize``, ``encode_text(tokens, normalize=True)``)."""
    from open_clip import build_zero_shot_classifier

    weights = build_zero_shot_classifier(model, model.tokenize, list(class_names), zero_shot_templates(templates),
                                         num_classes_per_batch=10, device=device)
    return weights.T
