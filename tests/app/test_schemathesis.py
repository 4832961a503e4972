"""Schemathesis over the end-user and admin APIs: every request the OpenAPI document allows
is accepted, every one it forbids is refused, and every answer is one it documents.

Bounded and deterministic: a few examples per operation, derandomized, a stated time
budget. The app runs in-process (ASGI) with the no-op swapper and an in-process worker,
as a tenant with one user holding Tokens (API key) and the platform admin (JWT).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.core.settings import Settings
from app.main import create_app
from tests.admin.helpers import ROOT_EMAIL, ROOT_PASSWORD

# Each operation's examples (positive and negative); derandomized, so every run sends
# the same requests.
MAX_EXAMPLES = 10
# A guard against a route that waits or a generation that runs away, not a benchmark:
# measured 25 to 55 s on this 2-core machine, depending on its load (argon2 hashing in
# sign-in and admin creation is most of it).
TIME_BUDGET_S = 120.0

# Not run here, with the reason.
EXCLUDED = {
    # A signed link: without a signature the server made, every request is 403 by design,
    # which only the result tests can exercise (they sign links).
    "GET /api/v1/results/{key}": "needs a signature the server made",
    # The process probes: not the end-user or admin API (/metrics is not in the document).
    "GET /healthz": "not the end-user or admin API",
    "GET /readyz": "not the end-user or admin API",
}

# A schema-valid swap body (a swap's or a quote's) names media whose content no JSON schema
# can describe (an image that decodes, a face in it): such a request is refused with 400
# (ImageDecodeFailed, InvalidBase64...) although it matches the schema; every other
# operation must accept every schema-valid request.
CONTENT_CHECKED = {"POST /api/v1/swap-face", "POST /api/v1/quote"}
# Answers a valid request can get for reasons outside the request (Tokens, state).
POSITIVE_STATUSES = ["2xx", "401", "402", "403", "404", "409", "429"]


class Identities:
    api_key: str = ""
    admin_token: str = ""
    tenant_id: str = ""
    external_id: str = ""


WHO = Identities()


def _setup(app: Any) -> None:
    """A tenant, a user with 1,000 Tokens and an API key, made through the API."""
    with asgi.get_client(app) as client:
        answer = client.post(
            "/api/v1/auth/token", json={"email": ROOT_EMAIL, "password": ROOT_PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        WHO.admin_token = answer.json()["access_token"]
        admin = {"Authorization": f"Bearer {WHO.admin_token}"}
        slug = f"fuzz-{uuid.uuid4().hex[:8]}"
        answer = client.post("/api/v1/admin/tenants", json={"name": slug}, headers=admin)
        assert answer.status_code == 201, answer.text
        WHO.tenant_id = answer.json()["id"]
        WHO.external_id = "fuzz-user"
        base = f"/api/v1/admin/tenants/{WHO.tenant_id}"
        answer = client.post(
            f"{base}/users/import", json={"users": [{"external_id": "fuzz-user"}]}, headers=admin
        )
        assert answer.status_code == 200, answer.text
        answer = client.post(
            f"{base}/recharges/bulk",
            json={"users": ["fuzz-user"], "amount": 1000, "reason": "fuzz"},
            headers=admin,
        )
        assert answer.status_code == 200, answer.text
        answer = client.post(
            f"{base}/users/fuzz-user/api-keys", json={"name": "fuzz"}, headers=admin
        )
        assert answer.status_code == 201, answer.text
        WHO.api_key = answer.json()["key"]


@pytest.fixture(scope="module")
def fuzz_app(settings: Settings) -> Iterator[Any]:
    app = create_app(
        settings.model_copy(
            update={
                "jobs_swapper": "noop",
                "jobs_inprocess_worker": True,
                "jobs_image_wait_seconds": 2.0,
                "jobs_max_wait_seconds": 1,
                "rate_limit_per_second": 1000.0,
                "rate_limit_burst": 2000,
            }
        )
    )
    _setup(app)
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Any) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_STATUSES}},
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, config=config)
    return schema.exclude(
        func=lambda ctx: f"{ctx.operation.method.upper()} {ctx.operation.path}" in EXCLUDED
    )


# Every check this Schemathesis version has (its "all"): not_a_server_error,
# status_code_conformance, content_type_conformance, response_headers_conformance,
# response_schema_conformance, negative_data_rejection, positive_data_acceptance,
# missing_required_header, unsupported_method, allow_header_conformance, ignored_auth, and
# the stateful ones (use_after_free...), which a single call leaves idle.
load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())


def _headers(path: str) -> dict[str, str]:
    token = WHO.admin_token if path.startswith(("/api/v1/admin", "/api/v1/auth")) else WHO.api_key
    return {"Authorization": f"Bearer {token}"}


def _has_whole_float(value: Any) -> bool:
    """JSON Schema counts ``2.0`` as the integer 2, so Schemathesis sends it where the schema
    says integer; the API refuses it where a Token amount is meant (strict integers, as
    ``true`` and ``"2"``): no schema can say so, hence no positive-data check on it."""
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_whole_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_whole_float(v) for v in value)
    return False


def _beyond_a_schema(case: schemathesis.Case) -> bool:
    """Schema-valid requests that no schema can tell from good ones, so no positive-data
    check on them: a ``from`` after its ``to``, or a usage report over more than a year
    (400 InvalidDateRange: JSON Schema cannot relate two parameters), and a users-page
    ``cursor`` the server did not make (it carries the sort key of the last row, any text:
    400 InvalidCursor, as a forged signature is)."""
    query = case.query or {}
    if {"from", "to"} <= query.keys():
        try:
            start = date.fromisoformat(str(query["from"]))
            end = date.fromisoformat(str(query["to"]))
        except ValueError:  # not a date: the negative checks' business
            return False
        if start > end or (case.path.endswith("/usage") and (end - start).days >= 366):
            return True
    return case.path.endswith("/users") and "cursor" in query


def _fuzz(operation: Any, mode: GenerationMode, failures: dict[str, str]) -> None:
    name = f"{operation.method.upper()} {operation.path}"
    fixed = None
    if mode.is_positive:  # valid requests name the fuzz tenant and user, past 404
        names = {p.name for p in operation.path_parameters}
        fixed = {
            k: v
            for k, v in (("tenant_id", WHO.tenant_id), ("external_id", WHO.external_id))
            if k in names
        }
    excluded = [positive_data_acceptance] if name in CONTENT_CHECKED else []

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        skipped = excluded
        if _has_whole_float(case.body) or _beyond_a_schema(case):
            skipped = [*excluded, positive_data_acceptance]
        try:
            case.call_and_validate(
                headers=_headers(case.path), checks=ALL_CHECKS, excluded_checks=skipped
            )
        except FailureGroup as exc:  # collected, not shrunk: one run shows every finding
            failures.setdefault(f"{name} ({mode})", str(exc)[:1500])

    run()


def test_api_answers_as_its_openapi_says(api_schema: Any) -> None:
    started = time.monotonic()
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    names = {f"{op.method.upper()} {op.path}" for op in operations}
    assert len(names) > 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, failures)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {len(operations)} operations, {len(ALL_CHECKS)} checks, {elapsed:.1f} s")
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
    assert elapsed < TIME_BUDGET_S
