"""The training item's schema: the fields it carries besides its views (index, label, caption, skipped),
the same whether the PIL or the batched path draws the views (xsample/views/)."""

from __future__ import annotations


def item_fields(item: dict) -> dict:
    """What a training item carries besides its pixels, whichever path draws its views."""
    return {"index": int(item["index"]), "label": int(item.get("label", -1)), "caption": item.get("caption") or "",
            # an unreadable position this item stands in for (-1: none)
            "skipped": int(item.get("skipped", -1))}
