"""The default price book, in Tokens. Per-tenant, versioned price books come later.

``image``: one swapped image. ``video_second``: each started second of target video.
``enhance_surcharge``: added per image, or per started video second, when ``enhance`` is on.
"""

from __future__ import annotations

from typing import Any

DEFAULT_PRICE_BOOK: dict[str, Any] = {
    "version": "default",
    "currency": "token",
    "image": 1,
    "video_second": 10,
    "enhance_surcharge": 1,
}


def price_book_for(tenant_id: object) -> dict[str, Any]:
    """The caller's price book (every tenant gets the default one for now)."""
    del tenant_id
    return dict(DEFAULT_PRICE_BOOK)
