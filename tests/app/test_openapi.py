"""/openapi.json documents each route's errors: every status it can answer, in the
contract's error shape (``ErrorBody``), with the codes each status can carry."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from fastapi import FastAPI

from app.auth.dependencies import ADMIN_AUTH_ERRORS, API_KEY_AUTH_ERRORS
from app.core.errors import (
    INFERENCE_STATUS,
    AccountFrozen,
    DocumentedRouter,
    Forbidden,
    MalformedJSON,
    NotFound,
    error_responses,
    install_error_handlers,
)
from tests.admin.helpers import (
    ROOT_EMAIL,
    create_api_key,
    create_tenant,
    import_users,
    root_headers,
)
from tests.jobs.conftest import face, make_customer

ERROR_BODY = "#/components/schemas/ErrorBody"

# Operations that answer no error of their own, only what any route can (500); /readyz's
# 503 is its readiness report, not an error body.
COMMON_ERRORS_ONLY = {"GET /healthz", "GET /readyz"}
NOT_ERROR_BODIES = {("GET /readyz", "503")}
# Operations naming an object in their path that never answer 404: a signed result link
# whose signature holds names a result we made (gone, 410, once no longer stored); any
# other is 403 InvalidSignature.
NEVER_NOT_FOUND = {"GET /api/v1/results/{key}"}
# What the handlers answer on any route, added to every operation by document_common_errors.
COMMON_CODES = {"InternalError", "ValidationError", "MalformedJSON"}


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


def _error_codes(operation: dict[str, Any]) -> dict[str, list[str]]:
    """Status -> the codes its entry lists (its examples), for every status of 400 and up."""
    return {
        status: list(entry.get("content", {}).get("application/json", {}).get("examples", {}))
        for status, entry in operation["responses"].items()
        if status.isdigit() and int(status) >= 400
    }


def _problems(name: str, operation: dict[str, Any]) -> list[str]:
    """Why the operation's errors are not documented as they should be (empty: they are)."""
    problems = []
    codes = _error_codes(operation)
    for status, entry in operation["responses"].items():
        if status not in codes or (name, status) in NOT_ERROR_BODIES:
            continue
        media = entry.get("content", {}).get("application/json", {})
        if media.get("schema", {}).get("$ref") != ERROR_BODY:
            problems.append(f"{status} is not an ErrorBody")
        if not codes[status]:
            problems.append(f"{status} lists no code")
        for code, example in media.get("examples", {}).items():
            if example["value"]["error"]["code"] != code:
                problems.append(f"{status}'s example for {code} shows another code")
            if f"`{code}`" not in entry["description"]:
                problems.append(f"{status}'s description does not name {code}")
    if "InternalError" not in codes.get("500", []):
        problems.append("no 500 InternalError")
    if "security" in operation and "401" not in codes:
        problems.append("authenticated, but no 401")
    if "{" in name and "404" not in codes and name not in NEVER_NOT_FOUND:
        problems.append("names an object in its path, but no 404")
    if "application/json" in operation.get("requestBody", {}).get("content", {}):
        if "MalformedJSON" not in codes.get("400", []):
            problems.append("takes JSON, but no 400 MalformedJSON")
        if "ValidationError" not in codes.get("422", []):
            problems.append("takes JSON, but no 422 ValidationError")
    own = {code for listed in codes.values() for code in listed} - COMMON_CODES
    if not own and name not in COMMON_ERRORS_ONLY:
        problems.append("declares no error of its own")
    return problems


async def test_every_route_documents_its_errors_in_the_error_shape(client) -> None:
    operations = _operations((await client.get("/openapi.json")).json())
    undocumented = {
        name: problems
        for name, operation in operations.items()
        if (problems := _problems(name, operation))
    }
    assert undocumented == {}
    assert NEVER_NOT_FOUND <= operations.keys(), "a route listed as never 404 no longer exists"


async def test_no_route_documents_fastapis_own_validation_error_shape(client) -> None:
    """FastAPI documents a 422 ``HTTPValidationError`` wherever it validates a request;
    the handler answers ``ErrorBody`` (422 ValidationError, 400 MalformedJSON) instead."""
    spec = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in str(spec)
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(spec["components"]["schemas"])
    for name, operation in _operations(spec).items():
        if "422" in operation["responses"]:
            assert _error_codes(operation)["422"] == ["ValidationError"], name


async def test_sign_in_documents_each_status_it_answers_with_its_codes(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    sign_in = spec["paths"]["/api/v1/auth/token"]["post"]
    assert _error_codes(sign_in) == {
        "400": ["InvalidText", "MalformedJSON"],
        "401": ["InvalidCredentials"],
        "403": ["Forbidden"],
        "415": ["UnsupportedMediaType"],
        "422": ["ValidationError"],
        "429": ["RateLimited"],
        "500": ["InternalError"],
        "503": ["ServiceUnavailable"],
    }
    assert sign_in["responses"]["401"]["description"] == (
        "- `InvalidCredentials`: Wrong email or password."
    )
    body = spec["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error"]
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert detail["required"] == ["code", "message", "request_id"]
    assert set(detail["properties"]) == {"code", "message", "request_id", "details"}


async def test_sign_in_answers_only_what_its_documentation_lists(client) -> None:
    """The documentation and the handlers agree: each failure's status and code are among
    the ones /openapi.json lists for the route."""
    documented = _error_codes(
        (await client.get("/openapi.json")).json()["paths"]["/api/v1/auth/token"]["post"]
    )
    headers = {"X-Forwarded-For": f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"}
    unknown = {"email": f"{uuid.uuid4().hex}@nowhere.test", "password": "guess-guess-guess"}
    answers = [
        await client.post("/api/v1/auth/token", json=unknown, headers=headers),
        await client.post(
            "/api/v1/auth/token",
            content=b"{not json",
            headers={**headers, "Content-Type": "application/json"},
        ),
        await client.post("/api/v1/auth/token", json={"email": "a@b.test"}, headers=headers),
        await client.post(
            "/api/v1/auth/token", json={**unknown, "email": "a\x00@b.test"}, headers=headers
        ),
    ]
    seen = {(str(a.status_code), a.json()["error"]["code"]) for a in answers}
    assert seen == {
        ("401", "InvalidCredentials"),
        ("400", "MalformedJSON"),
        ("422", "ValidationError"),
        ("400", "InvalidText"),
    }
    for status, code in seen:
        assert code in documented[status]


async def test_the_shared_auth_declarations_list_what_authentication_answers(client) -> None:
    """ADMIN_AUTH_ERRORS and API_KEY_AUTH_ERRORS, which routers declare once for all their
    routes, name the codes the two authentications really answer."""
    admin_route, api_key_route = "/api/v1/admin/audit-log", "/api/v1/balance"
    cases = [
        (ADMIN_AUTH_ERRORS, admin_route, {}),
        (ADMIN_AUTH_ERRORS, admin_route, {"Authorization": "Bearer not.a.jwt"}),
        (API_KEY_AUTH_ERRORS, api_key_route, {}),
        (API_KEY_AUTH_ERRORS, api_key_route, {"X-API-Key": "sm_nope_0123456789"}),
    ]
    seen = []
    for declared, path, headers in cases:
        answer = await client.get(path, headers=headers)
        code = answer.json()["error"]["code"]
        listed = declared[answer.status_code]["content"]["application/json"]["examples"]
        assert code in listed, (path, headers, code)
        seen.append(code)
    assert seen == ["Unauthorized", "InvalidToken", "Unauthorized", "InvalidApiKey"]


async def test_readyz_documents_its_503_as_the_readiness_report(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"]["/readyz"]["get"]["responses"]
    readiness = "#/components/schemas/Readiness"
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"] == readiness
    assert responses["503"]["content"]["application/json"]["schema"]["$ref"] == readiness
    assert spec["components"]["schemas"]["Readiness"]["required"] == ["status", "checks"]


def _spec_of(router: Any) -> dict[str, Any]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    return app.openapi()


def test_a_routes_errors_add_to_its_routers_status_by_status() -> None:
    """The router's 403 Forbidden and a route's 403 AccountFrozen are listed together: with
    FastAPI's own APIRouter the route's entry would replace the router's."""
    router = DocumentedRouter(responses=error_responses(Forbidden))

    @router.get("/frozen/{item_id}", responses=error_responses(AccountFrozen, NotFound))
    async def frozen(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @router.get("/plain")
    async def plain() -> dict[str, str]:
        return {}

    operations = _operations(_spec_of(router))
    assert _error_codes(operations["GET /frozen/{item_id}"]) == {
        "403": ["Forbidden", "AccountFrozen"],
        "404": ["NotFound"],
        "422": ["ValidationError"],
        "500": ["InternalError"],
    }
    assert _error_codes(operations["GET /plain"]) == {
        "403": ["Forbidden"],
        "500": ["InternalError"],
    }


def test_several_codes_on_one_status_are_listed_in_one_entry() -> None:
    responses = error_responses(NotFound, MalformedJSON, Forbidden, AccountFrozen)
    assert sorted(responses) == [400, 403, 404]
    assert list(responses[403]["content"]["application/json"]["examples"]) == [
        "Forbidden",
        "AccountFrozen",
    ]
    assert responses[403]["description"].splitlines()[1].startswith("- `AccountFrozen`: ")


async def _check_answers_are_documented(
    client, answers: list[tuple[str, Any]]
) -> set[tuple[str, str, str]]:
    """Each answer's status and code are among those /openapi.json lists for its route
    (``"METHOD /path/{template}"``); returns (route, status, code) of each."""
    operations = _operations((await client.get("/openapi.json")).json())
    seen = set()
    for name, answer in answers:
        assert answer.status_code >= 400, (name, answer.text)
        status, code = str(answer.status_code), answer.json()["error"]["code"]
        assert code in _error_codes(operations[name]).get(status, []), (name, status, code)
        seen.add((name, status, code))
    return seen


async def test_admin_routes_answer_only_what_their_documentation_lists(client) -> None:
    headers = await root_headers(client)
    as_json = {**headers, "Content-Type": "application/json"}
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["alice"])
    tenants = "/api/v1/admin/tenants"
    base = f"{tenants}/{tenant['id']}"
    admin = {"email": f"a-{uuid.uuid4().hex[:8]}@x.test", "password": "long-enough-pw"}
    nul_name = b'{"name": "a\\u0000b"}'
    route_of_admins = f"POST {tenants}/{{tenant_id}}/admins"
    route_of_user = f"{tenants}/{{tenant_id}}/users/{{external_id}}"

    async def new_admin(**changes: str) -> Any:
        body = {**admin, "role": "auditor", **changes}
        return await client.post(f"{base}/admins", json=body, headers=headers)

    answers = [
        (
            f"POST {tenants}",
            await client.post(tenants, json={"name": "x", "slug": "A_B"}, headers=headers),
        ),
        (
            f"POST {tenants}",
            await client.post(tenants, json={"name": "x", "slug": tenant["slug"]}, headers=headers),
        ),
        (f"POST {tenants}", await client.post(tenants, content=nul_name, headers=as_json)),
        (f"GET {tenants}", await client.get(tenants, params={"cursor": "ZZ"}, headers=headers)),
        (
            f"GET {tenants}/{{tenant_id}}",
            await client.get(f"{tenants}/{uuid.uuid4()}", headers=headers),
        ),
        (
            f"PATCH {tenants}/{{tenant_id}}",
            await client.patch(base, content=nul_name, headers=as_json),
        ),
        (route_of_admins, await new_admin(role="platform_admin")),
        (route_of_admins, await new_admin(email="nope")),
        (route_of_admins, await new_admin(password="short")),
        (route_of_admins, await new_admin(email=ROOT_EMAIL)),
        (
            "PATCH /api/v1/admin/admins/{admin_id}",
            await client.patch(
                f"/api/v1/admin/admins/{uuid.uuid4()}", json={"status": "disabled"}, headers=headers
            ),
        ),
        (
            f"POST {tenants}/{{tenant_id}}/users/import",
            await client.post(
                f"{base}/users/import",
                json={"users": [{"external_id": "u"}] * 10_001},
                headers=headers,
            ),
        ),
        (f"GET {route_of_user}", await client.get(f"{base}/users/nobody", headers=headers)),
        (
            f"POST {route_of_user}/freeze",
            await client.post(
                f"{base}/users/alice/freeze", content=b'{"reason": "a\\u0000"}', headers=as_json
            ),
        ),
        (
            "GET /api/v1/admin/audit-log",
            await client.get("/api/v1/admin/audit-log", params={"cursor": "x"}, headers=headers),
        ),
    ]
    seen = await _check_answers_are_documented(client, answers)
    assert {(status, code) for _, status, code in seen} == {
        ("400", "InvalidSlug"),
        ("409", "Conflict"),
        ("400", "InvalidText"),
        ("400", "InvalidCursor"),
        ("404", "NotFound"),
        ("400", "InvalidRole"),
        ("400", "InvalidEmail"),
        ("400", "WeakPassword"),
        ("400", "TooManyEntries"),
        ("404", "UserNotFound"),
    }


async def test_billing_routes_answer_only_what_their_documentation_lists(client) -> None:
    """A bulk recharge or a price change sent again with its Idempotency-Key but another
    body is 409 IdempotencyKeyReused, listed under the route's 409; and so on."""
    headers = await root_headers(client)
    as_json = {**headers, "Content-Type": "application/json"}
    tenant = await create_tenant(client)
    await import_users(client, tenant["id"], ["bob"])
    api_key = (await create_api_key(client, tenant["id"], "bob"))["key"]
    bulk = "POST /api/v1/admin/tenants/{tenant_id}/recharges/bulk"
    bulk_url = f"/api/v1/admin/tenants/{tenant['id']}/recharges/bulk"
    pricing = "PUT /api/v1/admin/tenants/{tenant_id}/pricing"
    pricing_url = f"/api/v1/admin/tenants/{tenant['id']}/pricing"
    keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    price_keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    one = {"users": ["bob"], "amount": 1}
    assert (await client.post(bulk_url, json=one, headers=keyed)).status_code == 200
    assert (
        await client.put(pricing_url, json={"image": 3}, headers=price_keyed)
    ).status_code == 200

    async def post_bulk(body: Any, request_headers: dict[str, str] = headers) -> Any:
        return await client.post(bulk_url, json=body, headers=request_headers)

    answers = [
        (bulk, await post_bulk({**one, "amount": 2}, keyed)),
        (bulk, await post_bulk(one, {**headers, "Idempotency-Key": "k" * 256})),
        (bulk, await client.post(bulk_url, content=b"{nope", headers=as_json)),
        (bulk, await post_bulk({})),
        (bulk, await post_bulk({**one, "amount": 0})),
        (bulk, await post_bulk({**one, "users": ["bob"] * 10_001})),
        (
            bulk,
            await client.post(
                f"/api/v1/admin/tenants/{uuid.uuid4()}/recharges/bulk", json=one, headers=headers
            ),
        ),
        (
            "POST /api/v1/admin/tenants/{tenant_id}/recharges/{batch_id}/approve",
            await client.post(
                f"/api/v1/admin/tenants/{tenant['id']}/recharges/{uuid.uuid4()}/approve",
                headers=headers,
            ),
        ),
        (
            "GET /api/v1/ledger",
            await client.get(
                "/api/v1/ledger", params={"cursor": "x"}, headers={"X-API-Key": api_key}
            ),
        ),
        (pricing, await client.put(pricing_url, json={"image": 4}, headers=price_keyed)),
        (pricing, await client.put(pricing_url, json={"image": "3"}, headers=headers)),
        (
            pricing,
            await client.put(
                pricing_url, content=b'{"image": 5, "reason": "a\\u0000b"}', headers=as_json
            ),
        ),
    ]
    seen = await _check_answers_are_documented(client, answers)
    assert (bulk, "409", "IdempotencyKeyReused") in seen
    assert (pricing, "409", "IdempotencyKeyReused") in seen
    assert {(status, code) for _, status, code in seen} == {
        ("409", "IdempotencyKeyReused"),
        ("400", "InvalidIdempotencyKey"),
        ("400", "MalformedJSON"),
        ("422", "ValidationError"),
        ("400", "InvalidAmount"),
        ("400", "TooManyEntries"),
        ("404", "NotFound"),
        ("400", "InvalidCursor"),
        ("400", "InvalidText"),
    }


async def test_swap_and_job_routes_answer_only_what_their_documentation_lists(client, db) -> None:
    """A swap refused for its body, its content type, a reused key or too few Tokens; a
    result asked for before its job ran; a forged result link: each answer is listed for
    its route. (No worker runs in this app: the job stays queued, then is canceled.)"""
    swap = "POST /api/v1/swap-face"
    image = base64.b64encode(face("obama.jpg")).decode()
    body = {"source": image, "target": base64.b64encode(face("biden.jpg")).decode()}
    customer = await make_customer(client, db, tokens=10)
    broke = await make_customer(client, db, tokens=0)
    key = {**customer.headers, "Idempotency-Key": uuid.uuid4().hex, "Prefer": "wait=0"}

    async def post_swap(headers: dict[str, str] = customer.headers, **kw: Any) -> Any:
        return await client.post("/api/v1/swap-face", headers=headers, **kw)

    queued = await post_swap(key, json=body)
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job_id"]
    as_json = {**customer.headers, "Content-Type": "application/json"}
    answers = [
        (swap, await post_swap(as_json, content=b"{nope")),
        (swap, await post_swap(json={**body, "source": "not base64!"})),
        (swap, await post_swap(json={"target": body["target"]})),
        (swap, await post_swap({**customer.headers, "Content-Type": "text/plain"}, content=b"x")),
        (swap, await post_swap(key, json={**body, "source": body["target"]})),
        (swap, await post_swap({**customer.headers, "Idempotency-Key": ""}, json=body)),
        (swap, await post_swap(broke.headers, json=body)),
        (
            "GET /api/v1/jobs/{job_id}/result",
            await client.get(f"/api/v1/jobs/{job_id}/result", headers=customer.headers),
        ),
        (
            "GET /api/v1/results/{key}",
            await client.get("/api/v1/results/x/y.jpg", params={"expires": "1", "sig": "0"}),
        ),
        (
            "GET /api/v1/jobs",
            await client.get("/api/v1/jobs", params={"cursor": "x"}, headers=customer.headers),
        ),
        (
            "GET /api/v1/jobs/{job_id}",
            await client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=customer.headers),
        ),
        (
            "GET /api/v1/jobs/{job_id}/webhook-deliveries",
            await client.get(
                f"/api/v1/jobs/{uuid.uuid4()}/webhook-deliveries", headers=customer.headers
            ),
        ),
    ]
    canceled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=customer.headers)
    assert canceled.json()["status"] == "canceled", canceled.text
    answers.append(
        (
            "GET /api/v1/jobs/{job_id}/result",
            await client.get(f"/api/v1/jobs/{job_id}/result", headers=customer.headers),
        )
    )
    seen = await _check_answers_are_documented(client, answers)
    assert {(status, code) for _, status, code in seen} == {
        ("400", "MalformedJSON"),
        ("400", "InvalidBase64"),
        ("422", "ValidationError"),
        ("415", "UnsupportedMediaType"),
        ("409", "IdempotencyKeyReused"),
        ("400", "InvalidIdempotencyKey"),
        ("402", "InsufficientBalance"),
        ("409", "ResultNotReady"),
        ("403", "InvalidSignature"),
        ("400", "InvalidCursor"),
        ("404", "NotFound"),
        ("409", "Canceled"),
    }


async def test_swap_face_documents_every_code_a_failed_job_answers_with(client) -> None:
    """An image swap answers its job's failure itself: each code a job can fail with
    (the engine's, InferenceFailed for any other engine error, ours) is listed under its
    status, as is a canceled job's 409."""
    spec = (await client.get("/openapi.json")).json()
    documented = _error_codes(spec["paths"]["/api/v1/swap-face"]["post"])
    failures = {
        **INFERENCE_STATUS,
        "InferenceFailed": 500,
        "WorkerLost": 503,
        "QueueTimeout": 503,
        "InternalError": 500,
        "Canceled": 409,
    }
    missing = {
        code: status
        for code, status in failures.items()
        if code not in documented.get(str(status), [])
    }
    assert missing == {}
