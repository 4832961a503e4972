"""Bulk recharge in the dashboard: a CSV of 1,000 users with bad rows, its preview, the
submit (twice: applied once), the report and its failed rows as CSV; the approval queue's
four eyes; what auditors get. Browser tests, then plain HTTP ones."""

from __future__ import annotations

import csv
import re
import uuid

import httpx
from fastapi import FastAPI

from tests.admin.helpers import create_admin, create_tenant, import_users, root_headers
from tests.dashboard.conftest import Account, Accounts, Ui, unique
from tests.dashboard.test_users import csrf, signed_in


async def _balances(client: httpx.AsyncClient, tenant_id: str, prefix: str) -> dict[str, int]:
    """Every user of the tenant whose id starts with ``prefix``: their balance (the users
    report, page by page)."""
    found: dict[str, int] = {}
    cursor = None
    while True:
        params = {"q": prefix, "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = await client.get(
            f"/api/v1/admin/tenants/{tenant_id}/users",
            params=params,
            headers=await root_headers(client),
        )
        assert page.status_code == 200, page.text
        found |= {u["external_id"]: u["balance"] for u in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if not cursor:
            return found


async def _tenant_with_admin(
    client: httpx.AsyncClient, users: list[str], **settings: object
) -> tuple[str, Account]:
    tenant = await create_tenant(client, name=unique("Recharge tenant"))
    if settings:
        patched = await client.patch(
            f"/api/v1/admin/tenants/{tenant['id']}",
            json=settings,
            headers=await root_headers(client),
        )
        assert patched.status_code == 200, patched.text
    admin = await create_admin(client, tenant["id"], "tenant_admin")
    await import_users(client, tenant["id"], users)
    return tenant["id"], Account(admin["email"], admin["password"], tenant["id"])


async def test_a_csv_of_1000_users_with_bad_rows_is_previewed_applied_once_and_reported(
    ui: Ui, client_session: httpx.AsyncClient, tmp_path
) -> None:
    users = [f"fan-{n:04d}" for n in range(1000)]
    tenant_id, admin = await _tenant_with_admin(client_session, users)
    rows = [[u, "7", "", ""] for u in users[:500]]
    rows += [
        ["fan-0500", "ten", "", ""],  # wrong amount
        ["fan-0501", "7", "next tuesday", ""],  # bad date
        ["fan-0002", "9", "", ""],  # duplicate user
        ["nobody-here", "7", "", ""],  # unknown user
    ]
    rows += [[u, "7", "", ""] for u in users[502:]]
    upload = tmp_path / "recharge.csv"
    with upload.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user", "amount", "expires_at", "label"])
        writer.writerows(rows)

    await ui.sign_in(admin)
    await ui.goto("/dashboard/bulk-recharge")
    await ui.page.get_by_label("CSV file").set_input_files(str(upload))
    await ui.page.get_by_label("Reason").fill("launch promo")
    assert await ui.submit("#recharge-form") == 200
    metric = ui.page.locator("#preview [data-metric]")
    figures = {
        await m.get_attribute("data-metric"): await m.inner_text() for m in await metric.all()
    }
    assert figures == {
        "requested": "1,002",
        "succeeded": "998",
        "total_amount": "6,986",
        "failed": "4",
        "unknown": "1",
    }
    assert await ui.page.locator("#unknown-users").inner_text() == "nobody-here"
    codes = await ui.page.locator("#failures tbody tr td:nth-child(3)").all_inner_texts()
    assert codes == ["InvalidAmount", "InvalidDate", "DuplicateEntry", "UserNotFound"]
    assert set((await _balances(client_session, tenant_id, "fan-")).values()) == {0}

    # Submitted twice at once (a double click without script), then the form again.
    form = ui.page.locator("#submit-form")
    fields = {
        name: await form.locator(f"input[name={name}]").input_value()
        for name in ("csrf_token", "stash", "digest", "idempotency_key")
    }
    action = ui.base_url + (await form.get_attribute("action") or "")
    async with ui.page.expect_navigation():
        await form.get_by_role("button", name="Submit the batch").dblclick()
    await ui.snap()
    assert "/dashboard/bulk-recharge/batches/" in ui.page.url
    assert (
        await ui.page.locator("#flash").inner_text()
        == "The batch was applied: its report is below."
    )
    assert await ui.page.locator("#report [data-metric=succeeded]").inner_text() == "998"
    again = await ui.context.request.post(action, form={**fields, "mode": "soft"})
    assert again.ok and again.url.split("?")[0] == ui.page.url.split("?")[0]
    assert "This batch was sent already: nothing was applied again." in await again.text()
    balances = await _balances(client_session, tenant_id, "fan-")
    assert balances == {u: 0 if u in ("fan-0500", "fan-0501") else 7 for u in users}

    # The report, and its failed rows as a file.
    assert await ui.page.locator("#batch-status").inner_text() == "applied"
    assert await ui.page.locator("#report [data-metric=failed]").inner_text() == "4"
    async with ui.page.expect_download() as download_info:
        await ui.page.get_by_role("link", name="Download the failed rows (CSV)").click()
    download = await download_info.value
    saved = tmp_path / "failed.csv"
    await download.save_as(saved)
    failed = list(csv.DictReader(saved.open(newline="")))
    assert [(r["row"], r["user"], r["code"]) for r in failed] == [
        ("501", "fan-0500", "InvalidAmount"),
        ("502", "fan-0501", "InvalidDate"),
        ("503", "fan-0002", "DuplicateEntry"),
        ("504", "nobody-here", "UserNotFound"),
    ]
    assert "ten" in failed[0]["message"] and "next tuesday" in failed[1]["message"]


async def test_a_batch_over_the_threshold_is_approved_by_a_second_admin_only(
    ui: Ui, accounts: Accounts, client_session: httpx.AsyncClient
) -> None:
    users = [unique("big") for _ in range(3)]
    tenant_id, sender = await _tenant_with_admin(client_session, users, approval_threshold=100)
    await ui.sign_in(sender)
    await ui.goto("/dashboard/bulk-recharge")
    await ui.page.get_by_label("External ids").fill("\n".join(users))
    await ui.page.get_by_label("Tokens for each").fill("50")
    assert await ui.submit("#recharge-form") == 200
    assert await ui.page.locator("#approval-required").is_visible()
    assert await ui.submit("#submit-form") == 200
    assert await ui.page.locator("#batch-status").inner_text() == "pending approval"
    batch_url = ui.page.url
    # The sender sees no approve button, and is refused if it posts one anyway.
    assert await ui.page.get_by_role("button", name="Approve").count() == 0
    assert await ui.page.locator("#awaiting").is_visible()
    token = await ui.page.locator("input[name=csrf_token]").first.input_value()
    own = await ui.context.request.post(
        batch_url.replace("?", "/approve?"),
        form={"csrf_token": token, "idempotency_key": str(uuid.uuid4())},
    )
    assert own.status == 403 and "different admin" in await own.text()
    await ui.goto(f"/dashboard/bulk-recharge/approvals?tenant={tenant_id}")
    assert await ui.page.locator("#queue tbody tr").count() == 1
    assert await ui.page.get_by_role("button", name="Approve").count() == 0
    assert set((await _balances(client_session, tenant_id, "big-")).values()) == {0}

    # A second admin (the platform's) approves it from the queue.
    await ui.sign_out()
    await ui.sign_in(accounts.root)
    await ui.goto(f"/dashboard/bulk-recharge/approvals?tenant={tenant_id}")
    row = ui.page.locator("#queue tbody tr")
    assert await row.count() == 1
    await row.get_by_role("button", name="Approve").click()
    await ui.settle()
    assert await ui.page.locator("#batch-status").inner_text() == "applied"
    assert (await ui.page.locator("#flash").inner_text()).startswith("The batch was applied")
    assert f"approved by {accounts.root.email}" in await ui.page.locator("main").inner_text()
    assert set((await _balances(client_session, tenant_id, "big-")).values()) == {50}
    await ui.goto(f"/dashboard/bulk-recharge/approvals?tenant={tenant_id}")
    assert await ui.page.locator("#queue-empty").is_visible()


async def test_an_auditor_sees_no_recharge_write_button_and_cannot_submit(
    ui: Ui, accounts: Accounts, client_session: httpx.AsyncClient
) -> None:
    tenant_id = accounts.auditor.tenant_id or ""
    user = unique("audited")
    await import_users(client_session, tenant_id, [user])
    await ui.sign_in(accounts.auditor)
    for path in ("/dashboard/bulk-recharge/approvals", "/dashboard/bulk-recharge"):
        assert await ui.goto(path) == 200
        assert await ui.write_controls() == 0, path
    # A preview reads only (as the API's, open to auditors); it offers no submit.
    await ui.page.get_by_label("External ids").fill(user)
    await ui.page.get_by_label("Tokens for each").fill("5")
    assert await ui.submit("#recharge-form") == 200
    assert await ui.page.locator("[data-metric=succeeded]").inner_text() == "1"
    assert await ui.write_controls() == 0
    token = await ui.page.locator("input[name=csrf_token]").first.input_value()
    posted = await ui.context.request.post(
        f"{ui.base_url}/dashboard/bulk-recharge/submit",
        form={"csrf_token": token, "stash": "x", "digest": "x", "idempotency_key": "k"},
    )
    assert posted.status == 403 and "read-only" in await posted.text()
    assert (await _balances(client_session, tenant_id, user))[user] == 0


# -- without a browser ----------------------------------------------------------------------


async def test_rejecting_needs_a_second_admin_and_credits_nothing(
    app: FastAPI, client: httpx.AsyncClient, accounts: Accounts
) -> None:
    users = [unique("nay") for _ in range(2)]
    tenant_id, sender = await _tenant_with_admin(client, users, approval_threshold=1)
    async with signed_in(app, sender.email, sender.password) as c:
        form = await c.get(f"/dashboard/bulk-recharge?tenant={tenant_id}")
        key = re.search(r'name="idempotency_key" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        preview = await c.post(
            f"/dashboard/bulk-recharge/preview?tenant={tenant_id}",
            data={
                "csrf_token": csrf(form),
                "ids": " ".join(users),
                "amount": "3",
                "idempotency_key": key,
            },  # fmt: skip
        )
        assert preview.status_code == 200
        hidden = dict(re.findall(r'name="(stash|digest)" value="([^"]+)"', preview.text))
        sent = await c.post(
            f"/dashboard/bulk-recharge/submit?tenant={tenant_id}",
            data={"csrf_token": csrf(form), "mode": "atomic", "idempotency_key": key, **hidden},
        )
        assert sent.status_code == 303
        batch = sent.headers["location"]
        assert "Reject" not in (await c.get(batch)).text
        own = await c.post(
            batch.replace("?", "/reject?"),
            data={"csrf_token": csrf(form), "idempotency_key": str(uuid.uuid4())},
        )
        assert own.status_code == 403
    async with signed_in(app, accounts.root.email, accounts.root.password) as root:
        page = await root.get(batch)
        assert "Reject" in page.text
        rejected = await root.post(
            batch.replace("?", "/reject?"),
            data={"csrf_token": csrf(page), "idempotency_key": str(uuid.uuid4())},
        )
        assert rejected.status_code == 303
        report = await root.get(batch)
        assert 'data-status="rejected"' in report.text and "Approve" not in report.text
    assert set((await _balances(client, tenant_id, "nay-")).values()) == {0}
    stored = await client.get(
        f"/api/v1/admin/tenants/{tenant_id}/recharges/{batch.split('/')[-1].split('?')[0]}",
        headers=await root_headers(client),
    )
    assert stored.json()["status"] == "rejected"


async def test_another_tenants_batch_is_404(
    app: FastAPI, client: httpx.AsyncClient, accounts: Accounts
) -> None:
    users = [unique("theirs")]
    tenant_id, _ = await _tenant_with_admin(client, users)
    sent = await client.post(
        f"/api/v1/admin/tenants/{tenant_id}/recharges/bulk",
        json={"users": users, "amount": 1},
        headers=await root_headers(client),
    )
    batch_id = sent.json()["batch_id"]
    admin = accounts.tenant_admin
    async with signed_in(app, admin.email, admin.password) as c:
        for path in (f"/batches/{batch_id}", f"/batches/{batch_id}/failed.csv", "/approvals"):
            answer = await c.get(f"/dashboard/bulk-recharge{path}?tenant={tenant_id}")
            assert answer.status_code == 404, path
        # Its own tenant has no such batch either.
        assert (await c.get(f"/dashboard/bulk-recharge/batches/{batch_id}")).status_code == 404
