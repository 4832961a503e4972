"""The tenants, jobs and audit pages without a browser: roles, 404s, CSRF, form errors,
filters and paging (faster than the browser tests, which walk the main paths)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import Database
from tests.admin.helpers import asgi_client, import_users
from tests.dashboard.conftest import Account, Accounts

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


class Browser:
    """A signed-in httpx client that knows its CSRF token."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client, self.token = client, token

    async def get(self, path: str, **kwargs: object) -> httpx.Response:
        return await self.client.get(path, **kwargs)  # type: ignore[arg-type]

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token
        return await self.client.post(path, data=form)


async def _signed_in(app: FastAPI, account: Account) -> AsyncIterator[Browser]:
    async with asgi_client(app) as client:
        login = await client.get("/dashboard/login")
        token = _TOKEN.search(login.text).group(1)  # type: ignore[union-attr]
        signed = await client.post(
            "/dashboard/login",
            data={"email": account.email, "password": account.password, "csrf_token": token},
        )
        assert signed.status_code == 303, signed.text
        page = await client.get("/dashboard")
        yield Browser(client, _TOKEN.search(page.text).group(1))  # type: ignore[union-attr]


@pytest.fixture
async def root(app: FastAPI, accounts: Accounts) -> AsyncIterator[Browser]:
    async for browser in _signed_in(app, accounts.root):
        yield browser


@pytest.fixture
async def tenant_admin(app: FastAPI, accounts: Accounts) -> AsyncIterator[Browser]:
    async for browser in _signed_in(app, accounts.tenant_admin):
        yield browser


@pytest.fixture
async def auditor(app: FastAPI, accounts: Accounts) -> AsyncIterator[Browser]:
    async for browser in _signed_in(app, accounts.auditor):
        yield browser


async def _insert_jobs(
    db: Database,
    tenant_id: str,
    external_id: str,
    count: int,
    status: str = "succeeded",
    minutes_ago: int = 60,
) -> list[str]:
    """Ended jobs of one user, one second apart (newest last) from ``minutes_ago``,
    straight into the table."""
    async with db.session() as s:
        user_id = (
            await s.execute(
                text("SELECT id FROM users WHERE tenant_id = :t AND external_id = :e"),
                {"t": tenant_id, "e": external_id},
            )
        ).scalar_one()
        start = datetime.now(UTC) - timedelta(minutes=minutes_ago)
        ids = []
        for n in range(count):
            job_id = uuid.uuid4()
            await s.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, user_id, kind, status, source_key,"
                    " target_key, metered, unit_price, created_at, finished_at)"
                    " VALUES (:id, :t, :u, :kind, :status, 'x', 'y', false, 1, :at, :at)"
                ),
                {
                    "id": job_id,
                    "t": tenant_id,
                    "u": user_id,
                    "kind": "video" if n % 2 else "image",
                    "status": status,
                    "at": start + timedelta(seconds=n),
                },
            )
            ids.append(str(job_id))
    return ids


# -- reach: another tenant's pages are 404, never 403 ----------------------------------------


async def test_a_tenant_admin_reaches_only_its_own_tenant(
    tenant_admin: Browser, accounts: Accounts
) -> None:
    own, other = accounts.tenant_admin.tenant_id, accounts.other_tenant_id
    listing = await tenant_admin.get("/dashboard/tenants")
    assert listing.status_code == 200
    assert f'data-tenant="{own}"' in listing.text and other not in listing.text
    assert "Create tenant" not in listing.text and "Suspend" not in listing.text
    for path in (
        f"/dashboard/tenants/{other}",
        f"/dashboard/jobs?tenant={other}",
        f"/dashboard/jobs/{uuid.uuid4()}?tenant={other}",
        f"/dashboard/jobs/{uuid.uuid4()}",
        f"/dashboard/audit?tenant={other}",
        f"/dashboard/audit/reports?tenant={other}",
        f"/dashboard/audit/usage.csv?tenant={other}",
        f"/dashboard/audit/ledger.csv?tenant={other}",
    ):
        answer = await tenant_admin.get(path)
        assert answer.status_code == 404, path
        assert "text/html" in answer.headers["content-type"], path
    for path, form in (
        (f"/dashboard/tenants/{other}/threshold", {"approval_threshold": "5"}),
        (f"/dashboard/tenants/{other}/prices", {"image": "2"}),
        (f"/dashboard/tenants/{other}/admins", {"email": "x@example.com", "password": "p" * 12}),
        (f"/dashboard/jobs/{uuid.uuid4()}/refund?tenant={other}", {"reason": "r"}),
        (f"/dashboard/audit/verify?tenant={other}", {}),
    ):
        assert (await tenant_admin.post(path, form)).status_code == 404, path
    # Platform-only writes: refused, and nothing changed.
    created = await tenant_admin.post("/dashboard/tenants", {"name": "Mine now"})
    assert created.status_code == 403
    suspended = await tenant_admin.post(f"/dashboard/tenants/{own}/status", {"status": "suspended"})
    assert suspended.status_code == 403
    page = await tenant_admin.get(f"/dashboard/tenants/{own}")
    assert 'id="tenant-status">active<' in page.text


async def test_an_auditor_reads_everything_and_writes_nothing(
    auditor: Browser, accounts: Accounts
) -> None:
    own = accounts.auditor.tenant_id
    for path in (
        "/dashboard/tenants",
        f"/dashboard/tenants/{own}",
        "/dashboard/jobs",
        "/dashboard/audit",
        "/dashboard/audit/reports",
    ):
        page = await auditor.get(path)
        assert page.status_code == 200, path
        assert "data-write" not in page.text, path
    for path, form in (
        (f"/dashboard/tenants/{own}/threshold", {"approval_threshold": "5"}),
        (f"/dashboard/tenants/{own}/prices", {"image": "2"}),
        (f"/dashboard/tenants/{own}/admins", {"email": "x@example.com", "password": "p" * 12}),
        (f"/dashboard/jobs/{uuid.uuid4()}/cancel", {}),
        (f"/dashboard/jobs/{uuid.uuid4()}/refund", {"reason": "r", "idempotency_key": "k"}),
        ("/dashboard/tenants", {"name": "Auditor's tenant"}),
    ):
        refused = await auditor.post(path, form)
        assert refused.status_code == 403, path
        assert "read-only" in refused.text, path
    # Verification only reads: auditors run it.
    verified = await auditor.post("/dashboard/audit/verify")
    assert verified.status_code == 200
    assert 'data-check="audit_chain"' in verified.text


async def test_writes_without_the_csrf_token_are_refused(root: Browser, db: Database) -> None:
    name = f"Forged {uuid.uuid4().hex[:6]}"
    forged = await root.post("/dashboard/tenants", {"name": name}, csrf=False)
    assert forged.status_code == 403
    wrong = await root.client.post(
        "/dashboard/tenants", data={"name": name, "csrf_token": "0" * 64}
    )
    assert wrong.status_code == 403
    async with db.session() as s:
        count = (
            await s.execute(text("SELECT count(*) FROM tenants WHERE name = :n"), {"n": name})
        ).scalar_one()
    assert count == 0


# -- forms: the contract's message beside the form, values kept -------------------------------


async def test_form_errors_show_the_contracts_message(
    root: Browser, tenant_admin: Browser, accounts: Accounts
) -> None:
    bad_slug = await root.post("/dashboard/tenants", {"name": "Bad slug", "slug": "No Spaces"})
    assert bad_slug.status_code == 400
    assert "slug must be 1-64 characters" in bad_slug.text
    assert 'value="No Spaces"' in bad_slug.text  # what was typed stays
    own = accounts.tenant_admin.tenant_id
    prices = await tenant_admin.post(
        f"/dashboard/tenants/{own}/prices", {"image": "0", "video_second": "10"}
    )
    assert prices.status_code == 400 and "image must be between 1 and" in prices.text
    words = await tenant_admin.post(f"/dashboard/tenants/{own}/prices", {"image": "three"})
    assert words.status_code == 400 and "image must be a whole number" in words.text
    # A tenant admin may set a threshold, not raise it: four eyes it could switch off.
    assert (
        await tenant_admin.post(
            f"/dashboard/tenants/{own}/threshold", {"approval_threshold": "500"}
        )
    ).status_code == 303
    raised = await tenant_admin.post(
        f"/dashboard/tenants/{own}/threshold", {"approval_threshold": "5000"}
    )
    assert raised.status_code == 403
    assert 'role="alert"' in raised.text and 'value="5000"' in raised.text
    weak = await tenant_admin.post(
        f"/dashboard/tenants/{own}/admins",
        {"email": f"a-{uuid.uuid4().hex[:6]}@example.com", "password": "short", "role": "auditor"},
    )
    assert weak.status_code == 400 and "WeakPassword" not in weak.text
    assert "at least" in weak.text  # the service's own words


# -- lists: filters and keyset pages -----------------------------------------------------------


async def test_the_jobs_list_filters_and_pages(
    root: Browser, client: httpx.AsyncClient, db: Database, accounts: Accounts
) -> None:
    tenant = accounts.other_tenant_id
    user = f"pager-{uuid.uuid4().hex[:6]}"
    await import_users(client, tenant, [user])
    ids = await _insert_jobs(db, tenant, user, 55)
    failed = await _insert_jobs(db, tenant, user, 2, status="failed", minutes_ago=30)
    first = await root.get(f"/dashboard/jobs?tenant={tenant}&user={user}")
    assert first.status_code == 200
    shown = re.findall(r'data-job="([0-9a-f-]{36})"', first.text)
    assert shown == (failed[::-1] + ids[::-1])[:50]  # newest first, 50 a page
    next_link = re.search(r'href="\?([^"]+)" rel="next"', first.text).group(1)  # type: ignore[union-attr]
    second = await root.get("/dashboard/jobs?" + next_link.replace("&amp;", "&"))
    assert re.findall(r'data-job="([0-9a-f-]{36})"', second.text) == ids[::-1][48:]
    assert 'rel="next"' not in second.text
    only_failed = await root.get(f"/dashboard/jobs?tenant={tenant}&status=failed")
    assert re.findall(r'data-job="([0-9a-f-]{36})"', only_failed.text) == failed[::-1]
    videos = await root.get(
        f"/dashboard/jobs?tenant={tenant}&user={user}&kind=video&status=succeeded"
    )
    assert len(re.findall(r'data-job="', videos.text)) == 27
    later = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    future = await root.get(f"/dashboard/jobs?tenant={tenant}&from={later}")
    assert "No job matches." in future.text
    for query, status, words in (
        ("status=lost", 400, "status must be one of"),
        ("cursor=nonsense", 400, "cursor is not one"),
        ("from=yesterday", 400, "from must be a date"),
        ("user=nobody-here", 404, "nobody-here"),
    ):
        answer = await root.get(f"/dashboard/jobs?tenant={tenant}&{query}")
        assert answer.status_code == status and words in answer.text, query


async def test_the_audit_log_filters_by_actor_action_and_time(
    root: Browser, tenant_admin: Browser, accounts: Accounts
) -> None:
    own = accounts.tenant_admin.tenant_id
    reason = f"audit-filter-{uuid.uuid4().hex[:6]}"
    saved = await tenant_admin.post(
        f"/dashboard/tenants/{own}/prices", {"image": "7", "reason": reason}
    )
    assert saved.status_code == 303
    mine = await tenant_admin.get(
        f"/dashboard/audit?actor={accounts.tenant_admin.email.upper()}&action=price.*"
    )
    assert mine.status_code == 200
    actions = re.findall(r'data-action="([^"]+)"', mine.text)
    assert actions and set(actions) == {"price.update"} and reason in mine.text
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert "No record matches." in (await root.get(f"/dashboard/audit?from={tomorrow}")).text
    assert reason in (await root.get(f"/dashboard/audit?to={tomorrow}&tenant={own}")).text
    # Platform operators see every tenant's records; the tenant admin only its own.
    everything = await root.get("/dashboard/audit?action=tenant.create")
    assert len(set(re.findall(r'href="/dashboard/tenants/([0-9a-f-]{36})"', everything.text))) >= 2
    assert (await tenant_admin.get("/dashboard/audit?cursor=-1")).status_code == 400


async def test_a_plan_is_written_whole_from_the_tenant_page(
    tenant_admin: Browser, auditor: Browser, accounts: Accounts
) -> None:
    own = accounts.tenant_admin.tenant_id
    name = f"gold-{uuid.uuid4().hex[:6]}"
    plan = {
        "name": name,
        "daily_free_tokens": "50",
        "refill_time": "06:00",
        "timezone": "Asia/Seoul",
        "rate_limit_per_second": "5",
        "max_concurrent_jobs": "2",
    }
    assert (await tenant_admin.post(f"/dashboard/tenants/{own}/plans", plan)).status_code == 303
    page = await tenant_admin.get(f"/dashboard/tenants/{own}?plan={name}")
    row = re.search(rf'<tr data-plan="{name}">(.*?)</tr>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert "50" in row and "06:00 Asia/Seoul" in row and ">5<" in row and ">2<" in row
    assert 'value="Asia/Seoul"' in page.text  # "Edit" fills the editor with the plan
    # PUT semantics: the plan is replaced whole; a limit left blank is gone.
    replaced = {**plan, "daily_free_tokens": "60", "rate_limit_per_second": ""}
    assert (await tenant_admin.post(f"/dashboard/tenants/{own}/plans", replaced)).status_code == 303
    page = await tenant_admin.get(f"/dashboard/tenants/{own}")
    row = re.search(rf'<tr data-plan="{name}">(.*?)</tr>', page.text, re.S).group(1)  # type: ignore[union-attr]
    assert "60" in row and ">5<" not in row and ">2<" in row
    bad_zone = await tenant_admin.post(
        f"/dashboard/tenants/{own}/plans", {**plan, "timezone": "Mars/Olympus"}
    )
    assert bad_zone.status_code == 422 and "Mars/Olympus" in bad_zone.text
    refused = await auditor.post(f"/dashboard/tenants/{own}/plans", plan)
    assert refused.status_code == 403


async def test_an_operator_cancels_a_queued_job_once(
    root: Browser, client: httpx.AsyncClient, db: Database, accounts: Accounts
) -> None:
    tenant = accounts.other_tenant_id
    user = f"cancel-{uuid.uuid4().hex[:6]}"
    await import_users(client, tenant, [user])
    [done] = await _insert_jobs(db, tenant, user, 1)
    [queued] = await _insert_jobs(db, tenant, user, 1, status="queued", minutes_ago=1)
    page = await root.get(f"/dashboard/jobs/{queued}?tenant={tenant}")
    assert page.status_code == 200 and "Cancel job" in page.text
    for _ in range(2):  # the second is the job as it is: canceled already
        canceled = await root.post(f"/dashboard/jobs/{queued}/cancel?tenant={tenant}")
        assert canceled.status_code == 303
    page = await root.get(canceled.headers["location"])
    assert 'id="job-status">canceled<' in page.text and "Cancel job" not in page.text
    async with db.session() as s:
        audited = (
            await s.execute(
                text("SELECT count(*) FROM audit_log WHERE action = 'job.cancel' AND target = :t"),
                {"t": f"job:{queued}"},
            )
        ).scalar_one()
    assert audited == 1
    finished = await root.post(f"/dashboard/jobs/{done}/cancel?tenant={tenant}")
    assert finished.status_code == 409 and "can no longer be canceled" in finished.text
