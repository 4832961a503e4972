"""What every result store is: the keys it accepts, what a write returns, the protocol."""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

# Small objects kept for good beside the results (the audit chain's anchor): never expired.
ANCHORS_PREFIX = "anchors/"

# Keys are made by the job runner (e.g. "<tenant>/<job>.jpg"), but they also come back in
# signed URLs, so anything that could climb out of the results directory is refused.
# Segments start with a letter or digit, which keeps temporary ".name.tmp" files apart.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}")
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
}


class InvalidResultKey(ValueError):
    """A key that could escape the store or collide with its temporary files."""


def valid_key(key: str) -> bool:
    """A name SwapMeter writes: nothing that could climb out of the results folder."""
    return bool(_KEY_RE.fullmatch(key)) and ".." not in key.split("/")


def check_key(key: str) -> str:
    if not valid_key(key):
        raise InvalidResultKey(f"invalid result key {key!r}")
    return key


def content_type_for(key: str) -> str:
    suffix = Path(key).suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    sha256: str


@runtime_checkable
class ResultStore(Protocol):
    """What the job runner and the result endpoints need from result storage."""

    async def put(
        self, key: str, data: bytes | Path, content_type: str, *, durable: bool = True
    ) -> StoredObject:
        """Store ``data`` (bytes, or a file to copy) under ``key``, replacing any old one.

        ``durable=False`` skips flushing to disk: for a job's inputs, which live seconds
        and whose loss in a crash only fails the job (and gives its Tokens back).
        """
        ...

    async def open(self, key: str) -> BinaryIO:
        """A binary file object to read the result from; ``NotFound`` when absent."""
        ...

    async def read(self, key: str) -> bytes:
        """The whole object (images and job inputs; stream videos with ``open``)."""
        ...

    def path_for(self, key: str) -> Path | None:
        """The local file to serve directly, or None when the store is remote."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the result; False when there was nothing to remove."""
        ...

    def signed_url(self, key: str, expires_in_s: int) -> str:
        """A URL anyone holding it may GET the result from until it expires."""
        ...

    async def list_expired(self, before: datetime) -> list[str]:
        """Keys of results written before ``before``."""
        ...

    async def delete_stray_temp(self, before: datetime) -> int:
        """Remove temporary files of writes that never finished; how many were removed."""
        ...
