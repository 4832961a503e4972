"""Where swap results live until they expire: a local directory or S3-compatible storage.

Both backends sit behind ``ResultStore`` so the job runner and the result endpoints never
care which one is configured (``SWAPMETER_RESULTS_BACKEND``). Results are handed out by
signed, expiring URLs: HMAC-signed ``/api/v1/results/<key>`` links for the local store
(served by our API), presigned URLs for S3 (served by the bucket). A cleanup loop removes
results past retention and temporary files left by interrupted writes.
"""

from __future__ import annotations

from app.core.settings import Settings
from app.core.storage.base import (
    ANCHORS_PREFIX,
    InvalidResultKey,
    ResultStore,
    StoredObject,
    check_key,
    content_type_for,
    valid_key,
)
from app.core.storage.cleanup import (
    DEFAULT_TEMP_MAX_AGE,
    RESULTS_CLEANED,
    CleanupReport,
    cleanup,
    run_cleanup_loop,
)
from app.core.storage.links import (
    RESULTS_FOLDER,
    RESULTS_URL_PATH,
    results_signing_secret,
    signed_link,
)
from app.core.storage.local import INLINE_IO_MAX_BYTES, TEMP_SUFFIX, LocalResultStore
from app.core.storage.s3 import S3ResultStore

__all__ = [
    "ANCHORS_PREFIX",
    "DEFAULT_TEMP_MAX_AGE",
    "INLINE_IO_MAX_BYTES",
    "RESULTS_CLEANED",
    "RESULTS_FOLDER",
    "RESULTS_URL_PATH",
    "TEMP_SUFFIX",
    "CleanupReport",
    "InvalidResultKey",
    "LocalResultStore",
    "ResultStore",
    "S3ResultStore",
    "StoredObject",
    "build_result_store",
    "check_key",
    "cleanup",
    "content_type_for",
    "results_signing_secret",
    "run_cleanup_loop",
    "signed_link",
    "valid_key",
]


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
