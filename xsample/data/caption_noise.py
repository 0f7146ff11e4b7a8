"""Caption noise (Table 4's graph-quality axis): a seeded fraction of the samples takes another sample's caption.

One rule for every caption source: the chosen samples' captions are permuted among themselves before
anything reads them, so the dataset's items (CLIP's text) and its caption-embedding cache (X-CLR's graph)
carry the same noisy captions, and Table 4 compares both methods on the same noisy-caption data. The
images and labels are untouched; a permutation keeps the caption distribution (a few chosen samples may
draw their own caption back, as in any random permutation).

The shapes world draws the chosen samples over its whole split. Webdataset shards draw them within each
shard: a stream cannot read another shard's caption at the moment it yields a sample, and a shard is
already a random draw of the corpus (img2dataset writes URL-list order, not topics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_caption_noise(fraction: float) -> float:
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"caption_noise must be in [0, 1], got {fraction}")
    return fraction


def caption_donors(count: int, fraction: float, seed: int | Sequence[int]) -> np.ndarray:
    """``donors[i]``: the sample whose caption sample ``i`` carries (``i`` itself for the clean ones);
    ``round(fraction * count)`` samples, chosen with ``seed``, have their captions permuted among them."""
    donors = np.arange(count)
    if check_caption_noise(fraction) > 0:
        rng = np.random.default_rng(seed)
        corrupted = rng.choice(count, size=int(round(fraction * count)), replace=False)
        donors[corrupted] = rng.permutation(corrupted)
    return donors
