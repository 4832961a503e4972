"""Where swap results live until they expire: a local directory or S3-compatible storage.

Both backends sit behind ``ResultStore`` so the job runner and the result endpoints never
care which one is configured (``SWAPMETER_RESULTS_BACKEND``). Results are handed out by
signed, expiring URLs: HMAC-signed ``/api/v1/results/<key>`` links for the local store
(served by our API), presigned URLs for S3 (served by the bucket). A cleanup loop removes
results past retention and temporary files left by interrupted writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import mimetypes
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import quote

from prometheus_client import Counter

from app.core.errors import NotFound
from app.core.settings import Settings

log = logging.getLogger(__name__)

RESULTS_URL_PATH = "/api/v1/results/"
# Small objects kept for good beside the results (the audit chain's anchor): never expired.
ANCHORS_PREFIX = "anchors/"
TEMP_SUFFIX = ".tmp"
DEFAULT_TEMP_MAX_AGE = timedelta(hours=1)
_COPY_CHUNK = 1 << 20
# Local reads, and writes that skip the fsync, up to this size run on the event loop: a
# copy to or from the page cache takes less time than handing it to a thread (about
# 0.4 ms on a 2-core VM). Larger ones, and every fsync, go to a thread.
INLINE_IO_MAX_BYTES = 1 << 20

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

RESULTS_CLEANED = Counter(
    "swapmeter_results_cleaned_total",
    "Files removed by the results cleanup: expired results and stray temporary files.",
    ["kind"],
)


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


def signed_link(store: ResultStore, key: str, ttl_s: int) -> dict[str, str]:
    """A result's URL, valid ``ttl_s`` from now, and when it expires (the job JSON's
    ``url`` and ``expires_at``)."""
    return {
        "url": store.signed_url(key, ttl_s),
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + ttl_s)),
    }


def _sign(secret: bytes, key: str, expires: int) -> str:
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


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
                        while chunk := src.read(_COPY_CHUNK):
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
        sig = _sign(self._secret, check_key(key), expires)
        return (
            f"{self.base_url}{RESULTS_URL_PATH}{quote(key, safe='/')}?expires={expires}&sig={sig}"
        )

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
        return hmac.compare_digest(_sign(self._secret, key, expires_at).encode(), sig.encode())

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


class S3ResultStore:
    """Results in an S3-compatible bucket (AWS, MinIO, R2, Ceph), handed out presigned.

    boto3 is an optional extra (``pip install 'swapmeter[s3]'``) imported only here;
    credentials come from the usual AWS environment variables, profile or instance role.
    Its calls block, so they run in a thread. Incomplete multipart uploads are left to a
    bucket lifecycle rule (AbortIncompleteMultipartUpload), the S3 way of temp cleanup.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "results/",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        if client is None:
            try:
                import boto3
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError(
                    "SWAPMETER_RESULTS_BACKEND=s3 needs boto3: pip install 'swapmeter[s3]'"
                ) from exc
            from botocore.config import Config

            # SigV4: required by newer AWS regions, MinIO and R2 for presigned URLs.
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(signature_version="s3v4"),
            )
        self.client = client

    def _object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def put(
        self, key: str, data: bytes | Path, content_type: str, *, durable: bool = True
    ) -> StoredObject:
        object_key = self._object_key(key)  # an acknowledged S3 PUT is durable either way
        if isinstance(data, bytes | bytearray | memoryview):
            body = bytes(data)
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=object_key,
                Body=body,
                ContentType=content_type,
            )
            return StoredObject(key, len(body), content_type, hashlib.sha256(body).hexdigest())
        size, sha = await asyncio.to_thread(_file_digest, Path(data))
        await asyncio.to_thread(
            self.client.upload_file,
            str(data),
            self.bucket,
            object_key,
            ExtraArgs={"ContentType": content_type},
        )
        return StoredObject(key, size, content_type, sha)

    async def open(self, key: str) -> BinaryIO:
        try:
            response = await asyncio.to_thread(
                self.client.get_object, Bucket=self.bucket, Key=self._object_key(key)
            )
        except Exception as exc:
            if _is_missing(exc):
                raise NotFound("Result not found") from None
            raise
        return response["Body"]

    async def read(self, key: str) -> bytes:
        body = await self.open(key)
        try:
            data: bytes = await asyncio.to_thread(body.read)
            return data
        finally:
            body.close()

    def path_for(self, key: str) -> Path | None:
        return None

    async def delete(self, key: str) -> bool:
        # S3 deletes are idempotent and do not say whether the object existed.
        await asyncio.to_thread(
            self.client.delete_object, Bucket=self.bucket, Key=self._object_key(key)
        )
        return True

    def signed_url(self, key: str, expires_in_s: int) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._object_key(key)},
                ExpiresIn=int(expires_in_s),
            )
        )

    async def list_expired(self, before: datetime) -> list[str]:
        return await asyncio.to_thread(self._list_expired_sync, before)

    def _list_expired_sync(self, before: datetime) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                if obj["LastModified"] < before:
                    keys.append(obj["Key"][len(self.prefix) :])
        return keys

    async def delete_stray_temp(self, before: datetime) -> int:
        return 0


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in {"NoSuchKey", "404", "NotFound"}


def results_signing_secret(settings: Settings) -> bytes:
    """The configured secret, else one derived from the JWT secret (one secret to manage)."""
    if settings.results_signing_secret:
        return settings.results_signing_secret.encode()
    return hmac.new(
        settings.jwt_secret.encode(), b"swapmeter result urls v1", hashlib.sha256
    ).digest()


def build_result_store(settings: Settings) -> LocalResultStore | S3ResultStore:
    if settings.results_backend == "s3":
        return S3ResultStore(
            settings.results_s3_bucket,
            prefix=settings.results_s3_prefix,
            endpoint_url=settings.results_s3_endpoint_url or None,
            region=settings.results_s3_region or None,
        )
    return LocalResultStore(
        settings.results_path, settings.results_base_url, results_signing_secret(settings)
    )


@dataclass(frozen=True)
class CleanupReport:
    results_deleted: int
    temp_deleted: int


async def cleanup(
    store: ResultStore,
    older_than: timedelta,
    *,
    temp_older_than: timedelta = DEFAULT_TEMP_MAX_AGE,
    now: datetime | None = None,
) -> CleanupReport:
    """Delete results older than ``older_than`` and temp files older than ``temp_older_than``.

    Temp files get their own, shorter age: younger ones may belong to a write in progress.
    """
    current = now or datetime.now(UTC)
    deleted = 0
    strangers: list[str] = []
    for key in await store.list_expired(current - older_than):
        if key.startswith(ANCHORS_PREFIX):
            continue
        if not valid_key(key):
            strangers.append(key)  # not a name SwapMeter writes (a folder marker, a copy)
            continue
        try:
            if await store.delete(key):
                deleted += 1
        except Exception:  # noqa: BLE001 - one object must not keep the others forever
            log.warning("results cleanup could not delete %s", key, exc_info=True)
    if strangers:
        log.warning(
            "results cleanup left alone %d object(s) SwapMeter did not write, e.g. %r",
            len(strangers),
            strangers[0],
        )
    temp_deleted = await store.delete_stray_temp(current - temp_older_than)
    RESULTS_CLEANED.labels("result").inc(deleted)
    RESULTS_CLEANED.labels("temp").inc(temp_deleted)
    if deleted or temp_deleted:
        log.info("results cleanup: %d expired results, %d temp files", deleted, temp_deleted)
    return CleanupReport(deleted, temp_deleted)


async def run_cleanup_loop(store: ResultStore, older_than: timedelta, interval_s: float) -> None:
    """Run ``cleanup`` every ``interval_s`` until cancelled; a failed round is logged."""
    while True:
        try:
            await cleanup(store, older_than)
        except Exception:  # noqa: BLE001 - a bad round must not stop the loop
            log.exception("results cleanup failed")
        await asyncio.sleep(interval_s)
