"""The training item's schema: the fields it carries besides its views (index, label, caption, skipped),
the same whether the PIL or the batched path draws the views (xsample/views/).

Datasets that hold their images decoded in memory (the shapes worlds, Fashion-MNIST) also hand over
``RGB_PIXELS``: the ``(H, W, 3)`` uint8 pixels of ``image``, which the batched views take as they are instead
of copying them out of the PIL image (a third of a tiny batch's item preparation)."""

from __future__ import annotations

RGB_PIXELS = "rgb_pixels"


def item_fields(item: dict) -> dict:
    """What a training item carries besides its pixels, whichever path draws its views."""
    return {"index": int(item["index"]), "label": int(item.get("label", -1)), "caption": item.get("caption") or "",
            # an unreadable position this item stands in for (-1: none)
            "skipped": int(item.get("skipped", -1))}
