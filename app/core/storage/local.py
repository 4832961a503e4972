"""Results as files in a local folder, written atomically, served by signed links."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from app.core.errors import NotFound
from app.core.storage.base import InvalidResultKey, StoredObject, check_key
from app.core.storage.links import RESULTS_URL_PATH, keys_of_link, link_path, sign_key

TEMP_SUFFIX = ".tmp"
COPY_CHUNK = 1 << 20
# Local reads, and writes that skip the fsync, up to this size run on the event loop: a
# copy to or from the page cache takes less time than handing it to a thread (about
# 0.4 ms on a 2-core VM). Larger ones, and every fsync, go to a thread.
INLINE_IO_MAX_BYTES = 1 << 20


class LocalResultStore:
    """Results as files under ``root_dir``, written atomically (temp file, fsync, rename).

    A reader therefore sees either the old file or the whole new one, never a torn write,
    and a crash mid-write leaves only a ``.name.<random>.tmp`` file that cleanup removes.
    """

    def __init__(self, root_dir: Path, base_url: str, signing_secret: bytes | str) -> None:
        self.root = Path(root_dir)
        self.base_url = base_url.rstrip("/")
        secret = signing_secret.encode() if isinstance(signing_secret, str) else signing_secret
        if not secret:
            raise ValueError("a signing secret is required for result URLs")
        self._secret = secret

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(
        self, key: str, data: bytes | Path, content_type: str, *, durable: bool = True
    ) -> StoredObject:
        args = (self._path(key), key, data, content_type, durable)
        if not durable and isinstance(data, bytes) and len(data) <= INLINE_IO_MAX_BYTES:
            return self._put_sync(*args)
        return await asyncio.to_thread(self._put_sync, *args)

    def _put_sync(
        self, target: Path, key: str, data: bytes | Path, content_type: str, durable: bool
    ) -> StoredObject:
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        digest = hashlib.sha256()
        size = 0
        try:
            with _create_in_folder(tmp) as out:
                if isinstance(data, bytes | bytearray | memoryview):
                    out.write(data)
                    digest.update(data)
                    size = len(data)
                else:
                    with open(data, "rb") as src:
                        while chunk := src.read(COPY_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            _fsync_dir(target.parent)
        return StoredObject(key, size, content_type, digest.hexdigest())

    async def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound("Result not found") from None

    async def read(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as file:  # noqa: ASYNC230 - INLINE_IO_MAX_BYTES
                if os.fstat(file.fileno()).st_size <= INLINE_IO_MAX_BYTES:
                    return file.read()
                return await asyncio.to_thread(file.read)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound("Result not found") from None

    def path_for(self, key: str) -> Path | None:
        path = self._path(key)
        if not path.is_file():
            raise NotFound("Result not found")
        return path

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete_sync, self._path(key))

    def _delete_sync(self, path: Path) -> bool:
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError):
            return False
        # Drop directories the deletion left empty (per-tenant folders), never the root.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    def signed_url(self, key: str, expires_in_s: int, *, now: float | None = None) -> str:
        expires = int(time.time() if now is None else now) + int(expires_in_s)
        sig = sign_key(self._secret, check_key(key), expires)
        return (
            f"{self.base_url}{RESULTS_URL_PATH}{quote(link_path(key), safe='/')}"
            f"?expires={expires}&sig={sig}"
        )

    def key_of_signed(
        self, path: str, expires: int | str, sig: str, now: float | None = None
    ) -> str | None:
        """The key a signed link's path names when its signature holds; None otherwise."""
        for key in keys_of_link(path):
            if self.verify_signed(key, expires, sig, now):
                return key
        return None

    def verify_signed(
        self, key: str, expires: int | str, sig: str, now: float | None = None
    ) -> bool:
        """True when ``sig`` was made by ``signed_url`` for this key and has not expired."""
        try:
            check_key(key)
            expires_at = int(expires)
        except (InvalidResultKey, ValueError):
            return False
        if expires_at <= (time.time() if now is None else now):
            return False
        return hmac.compare_digest(sign_key(self._secret, key, expires_at).encode(), sig.encode())

    async def list_expired(self, before: datetime) -> list[str]:
        return await asyncio.to_thread(self._list_sync, before.timestamp(), False)

    async def delete_stray_temp(self, before: datetime) -> int:
        stale = await asyncio.to_thread(self._list_sync, before.timestamp(), True)
        removed = 0
        for rel in stale:
            try:
                (self.root / rel).unlink()
                removed += 1
            except FileNotFoundError:
                pass  # its writer finished or another cleanup got there first
        return removed

    def _list_sync(self, before_ts: float, temp: bool) -> list[str]:
        found: list[str] = []
        if not self.root.is_dir():
            return found
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                is_temp = name.startswith(".") and name.endswith(TEMP_SUFFIX)
                if is_temp != temp or (not temp and name.startswith(".")):
                    continue
                path = Path(dirpath, name)
                try:
                    if path.stat().st_mtime < before_ts:
                        found.append(path.relative_to(self.root).as_posix())
                except FileNotFoundError:
                    continue
        return sorted(found)


def _create_in_folder(path: Path, attempts: int = 5) -> BinaryIO:
    """Open a new file for writing, making its folder first. A delete that empties the
    folder removes it, possibly between our mkdir and open: then make it again."""
    for attempt in range(attempts):
        try:
            # exist_ok still raises FileExistsError when the folder vanishes mid-call.
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(path, "wb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, FileExistsError):
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable; skipped where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
