"""Result storage: the local backend on a temp dir, signed URLs, cleanup; S3 offline only.

The S3 tests never reach a network: presigned URLs are computed locally by botocore, and
API calls go to botocore's Stubber, which checks the exact requests we would send.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.core.errors import NotFound
from app.core.settings import Settings
from app.core.storage import (
    InvalidResultKey,
    LocalResultStore,
    ResultStore,
    S3ResultStore,
    build_result_store,
    cleanup,
)
from app.main import create_app

SECRET = b"results-signing-secret-for-tests"
NOW = 1_700_000_000


@pytest.fixture
def store(tmp_path: Path) -> LocalResultStore:
    return LocalResultStore(tmp_path / "results", "https://api.swapmeter.test", SECRET)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _signed_parts(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path, query["expires"][0], query["sig"][0]


async def test_put_then_open_returns_the_same_bytes(store: LocalResultStore) -> None:
    stored = await store.put("tenant-1/job-1.jpg", b"\xff\xd8jpeg-bytes", "image/jpeg")
    assert stored.size == 12
    assert stored.content_type == "image/jpeg"
    with await store.open("tenant-1/job-1.jpg") as f:
        assert f.read() == b"\xff\xd8jpeg-bytes"
    assert await store.read("tenant-1/job-1.jpg") == b"\xff\xd8jpeg-bytes"
    path = store.path_for("tenant-1/job-1.jpg")
    assert path is not None and path.read_bytes() == b"\xff\xd8jpeg-bytes"
    assert path.is_relative_to(store.root)


async def test_put_from_a_file_copies_it_and_leaves_no_temp_files(
    store: LocalResultStore, tmp_path: Path
) -> None:
    source = tmp_path / "render.mp4"
    source.write_bytes(b"m" * 3_000_000)
    stored = await store.put("t/job.mp4", source, "video/mp4")
    assert stored.size == 3_000_000
    assert source.exists()
    assert (store.root / "t" / "job.mp4").read_bytes() == source.read_bytes()
    assert [p.name for p in store.root.rglob("*")] == ["t", "job.mp4"]


async def test_put_replaces_an_existing_result(store: LocalResultStore) -> None:
    await store.put("t/job.png", b"old", "image/png")
    await store.put("t/job.png", b"new", "image/png")
    with await store.open("t/job.png") as f:
        assert f.read() == b"new"


async def test_failed_put_leaves_neither_result_nor_temp_file(
    store: LocalResultStore, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        await store.put("t/job.png", tmp_path / "missing.png", "image/png")
    assert list((store.root / "t").iterdir()) == []


async def test_deleted_result_is_gone_and_its_empty_folder_too(store: LocalResultStore) -> None:
    await store.put("tenant-9/job.webp", b"w", "image/webp")
    assert await store.delete("tenant-9/job.webp")
    assert not await store.delete("tenant-9/job.webp")
    with pytest.raises(NotFound):
        await store.open("tenant-9/job.webp")
    with pytest.raises(NotFound):
        await store.read("tenant-9/job.webp")
    with pytest.raises(NotFound):
        store.path_for("tenant-9/job.webp")
    assert not (store.root / "tenant-9").exists()
    assert store.root.exists()


@pytest.mark.parametrize(
    "key",
    ["../escape.jpg", "t/../../escape.jpg", "/etc/passwd", "", "t//job.jpg", ".hidden", "t/.x"],
)
async def test_keys_that_could_escape_the_results_dir_are_refused(
    store: LocalResultStore, key: str
) -> None:
    with pytest.raises(InvalidResultKey):
        await store.put(key, b"x", "image/jpeg")
    assert not store.verify_signed(key, NOW + 60, "0" * 64, now=NOW)


def test_signed_url_has_the_contract_shape(store: LocalResultStore) -> None:
    url = store.signed_url("t/job-1.jpg", 3600, now=NOW)
    assert url.startswith("https://api.swapmeter.test/api/v1/results/t/job-1.jpg?expires=")
    path, expires, sig = _signed_parts(url)
    assert path == "/api/v1/results/t/job-1.jpg"
    assert int(expires) == NOW + 3600
    assert len(sig) == 64 and int(sig, 16) >= 0


def test_signed_url_is_valid_until_it_expires(store: LocalResultStore) -> None:
    _, expires, sig = _signed_parts(store.signed_url("t/job.jpg", 3600, now=NOW))
    assert store.verify_signed("t/job.jpg", expires, sig, now=NOW)
    assert store.verify_signed("t/job.jpg", expires, sig, now=NOW + 3599)
    assert not store.verify_signed("t/job.jpg", expires, sig, now=NOW + 3600)
    assert not store.verify_signed("t/job.jpg", expires, sig, now=NOW + 86_400)
    assert not store.verify_signed("t/job.jpg", expires, "é" * 64, now=NOW)  # no 500


def test_signed_url_refuses_tampering(store: LocalResultStore, tmp_path: Path) -> None:
    _, expires, sig = _signed_parts(store.signed_url("t/job.jpg", 3600, now=NOW))
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert not store.verify_signed("t/job.jpg", expires, flipped, now=NOW)
    assert not store.verify_signed("t/other-job.jpg", expires, sig, now=NOW)
    assert not store.verify_signed("t/job.jpg", str(int(expires) + 86_400), sig, now=NOW)
    assert not store.verify_signed("t/job.jpg", "soon", sig, now=NOW)
    other = LocalResultStore(tmp_path / "elsewhere", "", b"another-deployment-secret")
    assert not other.verify_signed("t/job.jpg", expires, sig, now=NOW)


async def test_cleanup_removes_only_expired_results_and_stale_temp_files(
    store: LocalResultStore,
) -> None:
    await store.put("t/old.jpg", b"old", "image/jpeg")
    await store.put("t/fresh.jpg", b"fresh", "image/jpeg")
    await store.put("u/old.mp4", b"old video", "video/mp4")
    _age(store.root / "t" / "old.jpg", 25 * 3600)
    _age(store.root / "u" / "old.mp4", 25 * 3600)
    stale_tmp = store.root / "t" / ".crashed.jpg.abc.tmp"
    live_tmp = store.root / "t" / ".writing.jpg.def.tmp"
    stale_tmp.write_bytes(b"partial")
    live_tmp.write_bytes(b"partial")
    _age(stale_tmp, 2 * 3600)

    report = await cleanup(store, older_than=timedelta(hours=24))

    assert (report.results_deleted, report.temp_deleted) == (2, 1)
    remaining = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*"))
    assert remaining == ["t", "t/.writing.jpg.def.tmp", "t/fresh.jpg"]


async def test_an_object_swapmeter_did_not_write_does_not_stop_the_cleanup(
    store: LocalResultStore,
) -> None:
    """A copy made by hand ("copy of ...", a name no key has) used to end every round at
    itself, so every result after it stayed forever; it is left alone, the rest go."""
    await store.put("t/a-old.jpg", b"old", "image/jpeg")
    await store.put("t/z-old.jpg", b"old", "image/jpeg")
    stranger = store.root / "t" / "copy of a-old.jpg"
    stranger.write_bytes(b"old")
    for path in (store.root / "t" / "a-old.jpg", store.root / "t" / "z-old.jpg", stranger):
        _age(path, 25 * 3600)

    report = await cleanup(store, older_than=timedelta(hours=24))

    assert report.results_deleted == 2
    assert [p.name for p in (store.root / "t").iterdir()] == ["copy of a-old.jpg"]


async def test_cleanup_of_an_empty_or_missing_store_does_nothing(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path / "never-written", "", SECRET)
    report = await cleanup(store, older_than=timedelta(hours=24))
    assert (report.results_deleted, report.temp_deleted) == (0, 0)


def test_local_store_is_the_default_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(environment="test", data_dir=tmp_path)
    store = build_result_store(settings)
    assert isinstance(store, LocalResultStore)
    assert isinstance(store, ResultStore)
    assert store.root == tmp_path / "results"
    assert store.signed_url("t/j.jpg", 60).startswith("/api/v1/results/t/j.jpg?expires=")


def test_s3_backend_without_a_bucket_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="BUCKET"):
        Settings(environment="test", results_backend="s3")


@pytest.mark.parametrize("prefix", ["", "results"])
def test_an_s3_prefix_that_is_not_a_folder_is_refused_at_start_up(prefix: str) -> None:
    """The cleanup deletes old objects under the prefix: with none, or one that is not a
    folder, it would take other objects of the bucket for expired results."""
    with pytest.raises(ValueError, match="PREFIX"):
        Settings(
            environment="test",
            results_backend="s3",
            results_s3_bucket="b",
            results_s3_prefix=prefix,
        )


# --- S3, offline -------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.fixture
def s3_store(aws_env: None, tmp_path: Path) -> S3ResultStore:
    pytest.importorskip("boto3")
    settings = Settings(
        environment="test",
        data_dir=tmp_path,
        results_backend="s3",
        results_s3_bucket="swapmeter-results",
        results_s3_endpoint_url="http://minio.internal.test:9000",
        results_s3_region="eu-west-1",
        results_s3_prefix="prod/",
    )
    store = build_result_store(settings)
    assert isinstance(store, S3ResultStore)
    return store


def test_s3_signed_url_is_a_presigned_get_of_the_prefixed_key(s3_store: S3ResultStore) -> None:
    url = s3_store.signed_url("t/job.jpg", 3600)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.netloc == "minio.internal.test:9000"
    assert parts.path == "/swapmeter-results/prod/t/job.jpg"
    assert query["X-Amz-Expires"] == ["3600"]
    assert "X-Amz-Signature" in query
    assert s3_store.path_for("t/job.jpg") is None


async def test_s3_put_and_list_expired_use_the_prefix(s3_store: S3ResultStore) -> None:
    from botocore.stub import ANY, Stubber

    old = datetime(2024, 1, 1, tzinfo=UTC)
    fresh = datetime(2024, 1, 3, tzinfo=UTC)
    with Stubber(s3_store.client) as stub:
        stub.add_response(
            "put_object",
            {},
            {
                "Bucket": "swapmeter-results",
                "Key": "prod/t/job.jpg",
                "Body": ANY,
                "ContentType": "image/jpeg",
            },
        )
        stub.add_response(
            "list_objects_v2",
            {
                "Contents": [
                    {"Key": "prod/t/old.jpg", "LastModified": old},
                    {"Key": "prod/t/fresh.jpg", "LastModified": fresh},
                ]
            },
            {"Bucket": "swapmeter-results", "Prefix": "prod/"},
        )
        stored = await s3_store.put("t/job.jpg", b"jpeg", "image/jpeg")
        expired = await s3_store.list_expired(datetime(2024, 1, 2, tzinfo=UTC))
        stub.assert_no_pending_responses()
    assert stored.size == 4
    assert expired == ["t/old.jpg"]


async def test_s3_missing_result_is_not_found(s3_store: S3ResultStore) -> None:
    from botocore.stub import Stubber

    with Stubber(s3_store.client) as stub:
        stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
        with pytest.raises(NotFound):
            await s3_store.open("t/gone.jpg")
        stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
        with pytest.raises(NotFound):
            await s3_store.read("t/gone.jpg")


async def test_s3_read_returns_the_whole_object(s3_store: S3ResultStore) -> None:
    import io

    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    with Stubber(s3_store.client) as stub:
        stub.add_response(
            "get_object",
            {"Body": StreamingBody(io.BytesIO(b"jpeg-bytes"), 10)},
            {"Bucket": "swapmeter-results", "Key": "prod/t/job.jpg"},
        )
        assert await s3_store.read("t/job.jpg") == b"jpeg-bytes"


async def test_writes_and_deletes_racing_in_one_folder_never_fail(store: LocalResultStore) -> None:
    """Deleting a folder's last file removes the folder; a write into it at that moment
    must still succeed (inputs of concurrent jobs share one folder)."""

    async def churn(name: str) -> None:
        for i in range(300):
            key = f"inputs/{name}-{i}.jpg"
            await store.put(key, b"x", "image/jpeg", durable=False)
            assert await store.delete(key)

    await asyncio.gather(*(churn(f"job{n}") for n in range(4)))
    assert not list(store.root.rglob("*.jpg"))


def test_the_access_log_keeps_no_result_link_signature(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed link works without an API key: the access log line of its download must
    not hand it to whoever reads the log."""
    create_app(settings)
    path = "/api/v1/results/t/job-1.jpg?expires=1796140005&sig=c7d27b4f9e"
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        # As uvicorn logs a request: client, method, path with query, HTTP version, status.
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200
        )
    [line] = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert "c7d27b4f9e" not in line and "sig=[hidden]" in line and "expires=1796140005" in line


def test_a_result_link_names_the_results_folder_once_and_old_links_still_verify(
    store: LocalResultStore,
) -> None:
    """Links of results read /api/v1/results/<tenant>/<file>; a link made when the path
    carried the whole key (/api/v1/results/results/...) verifies until it expires."""
    path, expires, sig = _signed_parts(store.signed_url("results/t/job-1.jpg", 3600, now=NOW))
    assert path == "/api/v1/results/t/job-1.jpg"
    assert store.key_of_signed("t/job-1.jpg", expires, sig, now=NOW) == "results/t/job-1.jpg"
    # The old form: the same key and signature, the folder repeated in the path.
    assert store.key_of_signed("results/t/job-1.jpg", expires, sig, now=NOW) == (
        "results/t/job-1.jpg"
    )
    assert store.key_of_signed("results/t/job-1.jpg", expires, sig, now=NOW + 3600) is None
    assert store.key_of_signed("inputs/t/job-1.jpg", expires, sig, now=NOW) is None
    # A key outside the results folder keeps its whole path.
    path, expires, sig = _signed_parts(store.signed_url("t/other.jpg", 60, now=NOW))
    assert path == "/api/v1/results/t/other.jpg"
    assert store.key_of_signed("t/other.jpg", expires, sig, now=NOW) == "t/other.jpg"
