"""Base64 inputs in every form clients send them decode to the same bytes."""

from __future__ import annotations

import base64

import pytest

from app.core.errors import BadRequest
from app.jobs.inputs import decode_base64

DATA = bytes(range(256)) * 40 + b"\xfb\xff"  # every byte value, and + / in the encoding


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(DATA).decode(),
        base64.b64encode(DATA).decode().rstrip("="),  # padding dropped
        base64.urlsafe_b64encode(DATA).decode(),  # - and _ instead of + and /
        base64.encodebytes(DATA).decode(),  # MIME line breaks every 76 characters
        "data:image/jpeg;base64," + base64.b64encode(DATA).decode(),
    ],
    ids=["standard", "unpadded", "urlsafe", "line-broken", "data-url"],
)
def test_every_common_encoding_decodes_to_the_original(text: str) -> None:
    assert decode_base64(text, "target") == DATA


@pytest.mark.parametrize("text", ["***not base64***", "abc$", "data:image/png;base64,%%%%"])
def test_what_is_not_base64_is_invalid_base64(text: str) -> None:
    with pytest.raises(BadRequest) as refused:
        decode_base64(text, "target")
    assert refused.value.code == "InvalidBase64"
