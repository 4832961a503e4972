"""All runtime settings, read from ``SWAPMETER_*`` environment variables (and ``.env``)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.config import EngineConfig

DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me"
DEV_AUDIT_KEY = "dev-only-insecure-audit-key-change-me"
MIN_SECRET_CHARS = 32
_KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,32}")
REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWAPMETER_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"

    # Empty URLs mean "start embedded servers under data_dir" (swapmeter dev only).
    database_url: str = ""
    redis_url: str = ""
    data_dir: Path = Path(".swapmeter")
    db_pool_size: int = 10
    db_max_overflow: int = 10

    jwt_secret: str = DEV_JWT_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "swapmeter"
    jwt_ttl_seconds: int = 3600
    # How long a dashboard sign-in lasts (/dashboard), from sign-in: its session is then
    # forgotten by the server whatever the browser keeps (docs/dashboard.md).
    dashboard_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 86400)
    # The audit chain's HMAC key (docs/security.md): a secret outside the database, and its
    # id, stored in each row it signs. To rotate, give a new key and id, and move the old
    # pair into audit_old_keys ("id:secret,id:secret"), which still verify older rows.
    audit_key: str = DEV_AUDIT_KEY
    audit_key_id: str = "k1"
    audit_old_keys: str = ""
    # Also keep the anchor of the audit chain's head as anchors/audit-head.json in the
    # result store (it is always kept in Redis, the log and the metrics).
    audit_anchor_store: bool = False
    bootstrap_admin_email: str = ""
    bootstrap_admin_password: str = ""
    # Comma-separated CIDRs allowed to call /api/v1/admin and /api/v1/auth; empty: anyone.
    admin_ip_allowlist: str = ""
    # Trust X-Forwarded-For from these proxies (comma-separated CIDRs) for client IPs.
    trusted_proxies: str = "127.0.0.1/32,::1/128"
    # When set, /metrics (the API's and each worker's) answers only requests carrying
    # "Authorization: Bearer <this>"; 401 otherwise. Empty: open to whoever reaches it.
    metrics_token: str = ""

    # Billing limits. The largest Token amount of one recharge entry (1 to 10^15: every
    # balance, the tenant's issuance account's too, must stay within a bigint).
    max_amount: int = Field(default=10**12, ge=1, le=10**15)
    bulk_max_entries: int = 10_000
    idempotency_ttl_hours: int = 48

    # Inference
    # Default: the checkout's ../shared/models when present (development), else <data_dir>/models.
    models_dir: Path | None = None
    execution_providers: str = "cpu"  # comma list: tensorrt,cuda,cpu
    intra_op_threads: int = 0
    allow_noncommercial_models: bool = False
    swapper: str = "classic"
    detector: str = "yunet"
    # Processing lanes for one video (0: one per core, at most 4).
    video_workers: int = 0
    # Let idle ONNX Runtime threads busy-wait: a little lower latency, much more CPU burnt.
    ort_spinning: bool = False
    # Mirror to download models from instead of the catalogue's public URLs.
    models_base_url: str | None = None
    max_video_seconds: float = 600.0
    label_enabled: bool = True
    label_text: str = "AI-generated"
    label_position: str = "bottom-right"

    @model_validator(mode="after")
    def _default_models_dir(self) -> Settings:
        if self.models_dir is None:
            shared = (REPO_ROOT.parent / "shared" / "models").resolve()
            self.models_dir = shared if shared.is_dir() else self.data_dir / "models"
        return self

    @model_validator(mode="after")
    def _refuse_default_secrets_outside_development(self) -> Settings:
        if self.environment == "production" and self.jwt_secret == DEV_JWT_SECRET:
            raise ValueError("SWAPMETER_JWT_SECRET must be set to a real secret in production")
        if self.environment == "production" and len(self.jwt_secret) < 32:
            raise ValueError("SWAPMETER_JWT_SECRET must be at least 32 characters in production")
        if self.environment == "production" and self.audit_key == DEV_AUDIT_KEY:
            raise ValueError("SWAPMETER_AUDIT_KEY must be set to a real secret in production")
        if self.environment == "production" and len(self.audit_key) < MIN_SECRET_CHARS:
            raise ValueError("SWAPMETER_AUDIT_KEY must be at least 32 characters in production")
        self.audit_keys()  # a malformed key list is refused at start, in every environment
        return self

    def audit_keys(self) -> dict[str, bytes]:
        """The audit keys by id, the signing one (``audit_key``) first."""
        keys = {self.audit_key_id: self.audit_key}
        for entry in filter(None, (e.strip() for e in self.audit_old_keys.split(","))):
            key_id, sep, secret = entry.partition(":")
            if not sep or not secret:
                raise ValueError("SWAPMETER_AUDIT_OLD_KEYS takes id:secret pairs, comma-separated")
            if key_id in keys:
                raise ValueError(f"audit key id {key_id!r} is given twice")
            keys[key_id] = secret
        for key_id, secret in keys.items():
            if not _KEY_ID_RE.fullmatch(key_id):
                raise ValueError(
                    f"audit key id {key_id!r}: 1 to 32 letters, digits, '.', '_' or '-'"
                )
            if not secret:
                raise ValueError(f"audit key {key_id!r} is empty")
        return {key_id: secret.encode() for key_id, secret in keys.items()}

    @property
    def async_database_url(self) -> str:
        """The operator gives a plain postgresql:// URL; we pick the asyncpg driver."""
        return to_asyncpg_url(self.database_url)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            models_dir=self.models_dir or self.data_dir / "models",
            providers=tuple(p.strip() for p in self.execution_providers.split(",") if p.strip()),
            intra_op_threads=self.intra_op_threads,
            allow_noncommercial_models=self.allow_noncommercial_models,
            swapper=self.swapper,
            detector=self.detector,
            video_workers=self.video_workers,
            ort_spinning=self.ort_spinning,
            models_base_url=self.models_base_url,
            max_video_seconds=self.max_video_seconds,
            label_enabled=self.label_enabled,
            label_text=self.label_text,
            label_position=self.label_position,
        )

    # --- Metered swap API building blocks (issue #4): URL inputs, rate limits, webhooks and
    # result storage (app/core/fetch.py, app/core/ratelimit.py, app/webhooks/delivery.py,
    # app/core/storage/).
    # Comma list of "host" or "host:port" exempt from the private-address refusal of URL
    # inputs and webhooks; meant for tests and on-premise setups, keep empty in production.
    url_fetch_allow_hosts: str = ""
    url_fetch_max_bytes: int = 200 * 1024 * 1024
    url_fetch_timeout_seconds: float = 30.0
    # Requests per second per API key when the key sets none, and the burst on top of it.
    rate_limit_per_second: float = 10.0
    rate_limit_burst: int = 20
    max_concurrent_jobs_per_tenant: int = 8
    # Redis down: true lets requests through (counted in metrics), false answers 503.
    rate_limit_fail_open: bool = True
    # A dead Redis must cost milliseconds per request, never the default socket timeouts.
    rate_limit_redis_timeout_seconds: float = 0.25
    webhook_attempts: int = 5
    webhook_backoff_base_seconds: float = 1.0
    webhook_timeout_seconds: float = 10.0
    results_backend: Literal["local", "s3"] = "local"
    results_dir: Path | None = None  # default <data_dir>/results
    # Prefix of signed result URLs, e.g. https://api.example.com; empty: relative URLs.
    results_base_url: str = ""
    # HMAC key of signed result URLs; empty: derived from jwt_secret.
    results_signing_secret: str = ""
    results_url_ttl_seconds: int = 24 * 3600
    results_retention_seconds: int = 24 * 3600
    results_cleanup_interval_seconds: int = 300
    results_s3_bucket: str = ""
    results_s3_endpoint_url: str = ""  # empty: AWS; set for MinIO, R2, Ceph...
    results_s3_region: str = ""
    results_s3_prefix: str = "results/"

    @property
    def url_fetch_allow_hosts_set(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower() for h in self.url_fetch_allow_hosts.split(",") if h.strip()
        )

    @property
    def results_path(self) -> Path:
        return self.results_dir or self.data_dir / "results"

    @model_validator(mode="after")
    def _s3_results_need_a_bucket(self) -> Settings:
        if self.results_backend == "s3" and not self.results_s3_bucket:
            raise ValueError("SWAPMETER_RESULTS_S3_BUCKET is required when RESULTS_BACKEND=s3")
        if self.results_backend == "s3" and not self.results_s3_prefix.endswith("/"):
            # The cleanup deletes what it lists under the prefix: with none (or "res" for
            # "res/"), other objects of the bucket would be taken for expired results.
            raise ValueError(
                "SWAPMETER_RESULTS_S3_PREFIX must be a folder of its own, ending in '/' "
                "(default 'results/')"
            )
        return self

    # --- end of issue #4 building blocks settings.

    # --- Metered swap jobs (issue #4, app/jobs/): the Postgres queue, workers, waits.
    # Run a job worker inside the API process (swapmeter dev turns it on; production runs
    # `swapmeter worker` processes instead).
    jobs_inprocess_worker: bool = False
    # Jobs one worker process runs at once (`swapmeter worker --concurrency` overrides).
    jobs_worker_concurrency: int = 1
    # A running job's lease; renewed every third of it. A dead worker's job is claimed
    # again once its lease runs out, at most jobs_max_attempts times in all.
    jobs_lease_seconds: float = 30.0
    jobs_max_attempts: int = 3
    # Workers wake on LISTEN/NOTIFY; this poll only covers a lost notification.
    jobs_poll_seconds: float = 2.0
    # Image swaps answer synchronously; past this wait they answer 202 like a video.
    jobs_image_wait_seconds: float = 60.0
    # The largest N honoured in `Prefer: wait=N`.
    jobs_max_wait_seconds: int = 60
    # Largest swap-face request body (JSON with base64, or multipart).
    jobs_max_body_bytes: int = 100 * 1024 * 1024
    # "noop" returns the target unchanged, for benchmarks of the API and metering path.
    jobs_swapper: Literal["engine", "noop"] = "engine"
    # false: swap-face holds, captures and writes nothing to the ledger (benchmarks).
    jobs_metering: bool = True
    # How often a worker refreshes the queue gauges and reaps jobs of dead workers (API
    # processes reap too: held Tokens come back even when no worker runs at all).
    jobs_housekeeping_seconds: float = 5.0
    # A job still queued this long after it was submitted (no worker took it, or none
    # could finish it) fails with QueueTimeout and its Tokens are released in full.
    # 0: jobs wait for a worker however long it takes.
    jobs_queue_timeout_seconds: float = 24 * 3600.0
    # How long a worker may take to deliver a finished job's webhook before another
    # worker's sweep sends it instead.
    jobs_webhook_lease_seconds: int = 900
    # Where `swapmeter worker` serves /metrics for Prometheus (0: not served), and on which
    # address: this host only by default (the metrics name tenants and their Token
    # volumes); 0.0.0.0 (all interfaces) where Prometheus scrapes from elsewhere, as the
    # Helm chart sets it.
    jobs_worker_metrics_port: int = 9101
    jobs_worker_metrics_host: str = "127.0.0.1"
    # How often one of the workers verifies the whole ledger (balances, holds, zero sums,
    # the audit chain) for the swapmeter_ledger_verify_* gauges; 0: never (only
    # GET /admin/ledger/verify then updates them). One scan of the ledger entries.
    ledger_verify_interval_seconds: float = Field(default=3600.0, ge=0)
    # --- end of metered swap jobs settings.


def to_asyncpg_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
