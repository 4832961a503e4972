"""Results in an S3-compatible bucket, handed out by presigned URLs."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from app.core.errors import NotFound
from app.core.storage.base import StoredObject, check_key
from app.core.storage.local import COPY_CHUNK


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
        while chunk := f.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in {"NoSuchKey", "404", "NotFound"}
