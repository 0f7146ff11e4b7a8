"""The CLIP baseline trained from scratch: an image backbone plus an open_clip text transformer."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, _build_text_tower
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

# CLIP clamps the learnable temperature so that logits are scaled by at most 100.
MAX_LOGIT_SCALE = math.log(100.0)
TEXT_CFG_KEYS = frozenset(field.name for field in dataclasses.fields(CLIPTextCfg))


def _text_config(text_cfg: dict) -> CLIPTextCfg:
    unknown = sorted(set(text_cfg) - TEXT_CFG_KEYS)
    if unknown:
        raise ValueError(f"unknown CLIP text config keys {unknown}; use open_clip CLIPTextCfg fields "
                         "(context_length, vocab_size, width, heads, layers, ...)")
    if text_cfg.get("hf_model_name"):
        raise ValueError("the CLIP baseline trains its text transformer from scratch; remove hf_model_name")
    return CLIPTextCfg(**text_cfg)


class CLIPModel(nn.Module):
    """Image tower (``backbone`` + linear projection) and text tower sharing a ``embed_dim`` space.

    ``forward`` returns L2-normalised image and text features and the exponentiated logit scale. The logit
    scale is clamped to [0, ln 100] at every forward, as open_clip does after each optimiser step, so it
    never multiplies cosines by more than 100 and still receives gradients at the bound.
    """

    def __init__(self, image_backbone: nn.Module, image_feature_dim: int, embed_dim: int, text_cfg: dict,
                 init_logit_scale: float = math.log(1 / 0.07)):
        super().__init__()
        config = _text_config(dict(text_cfg))
        # open_clip's BPE tokenizer ships its vocabulary inside the package: no download, works offline.
        self._tokenizer = SimpleTokenizer(context_length=config.context_length)
        if config.vocab_size < self._tokenizer.vocab_size:
            raise ValueError(f"text vocab_size={config.vocab_size} is smaller than the tokenizer's "
                             f"{self._tokenizer.vocab_size} tokens; set vocab_size={self._tokenizer.vocab_size}")
        if not 0 <= init_logit_scale <= MAX_LOGIT_SCALE:
            raise ValueError(f"init_logit_scale must be in [0, ln 100 = {MAX_LOGIT_SCALE:.4f}], got {init_logit_scale}"
                             " (it is the log of the inverse temperature, e.g. ln(1/0.07) = 2.6593)")
        self.backbone = image_backbone
        self.image_projection = nn.Linear(image_feature_dim, embed_dim, bias=False)
        self.text = _build_text_tower(embed_dim, config)
        self.context_length = config.context_length
        self.embed_dim = embed_dim
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(N, context_length) int64 tokens; long captions are truncated, keeping the end-of-text token."""
        texts = list(texts)
        if not all(isinstance(text, str) for text in texts):
            raise ValueError("tokenize expects a list of strings (captions)")
        return self._tokenizer(texts, context_length=self.context_length)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.image_projection(self.backbone(images))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(f"tokens must be (N, <= {self.context_length}), got {tuple(tokens.shape)}; "
                             "make them with model.tokenize(captions)")
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return (self.encode_image(images, normalize=True), self.encode_text(tokens, normalize=True),
                self.logit_scale.exp())
