"""Audit and integrity in a real browser: the verification shows each check's result, the
usage report downloads as the contract's CSV, the audit log filters; auditors read it all
and see no write button."""

from __future__ import annotations

from pathlib import Path

from tests.dashboard.conftest import Accounts, Ui

# The usage report's columns, as CONTRACT.md lists them (GET .../usage, Accept: text/csv).
USAGE_HEADER = (
    "day,recharged,granted,consumed,released,refunded,expired,adjusted,images_succeeded,"
    "images_failed,videos_succeeded,videos_failed,video_seconds,active_users"
)
CHECKS = (
    "balance",
    "held",
    "open_holds",
    "zero_sum",
    "account_reference",
    "hold_entries",
    "job_hold",
    "usage_rollup",
    "audit_chain",
)


async def _verify(ui: Ui) -> None:
    async with ui.page.expect_navigation():
        await ui.page.get_by_role("button", name="Verify the ledger and audit chain").click()
    await ui.settle()
    assert await ui.page.get_by_role("heading", name="Verification").is_visible()
    results = [
        (
            await row.get_attribute("data-check"),
            await row.locator("td").get_attribute("data-result"),
        )
        for row in await ui.page.locator("#checks tbody tr").all()
    ]
    assert results == [(check, "ok") for check in CHECKS]
    assert await ui.page.locator("#verify-overall").inner_text() == "Every check passed."


async def test_the_verify_button_shows_each_check_ok(ui: Ui, accounts: Accounts) -> None:
    await ui.sign_in(accounts.root)
    tenant = accounts.tenant_admin.tenant_id
    assert await ui.goto(f"/dashboard/audit?tenant={tenant}") == 200
    await _verify(ui)
    assert f"tenant {tenant}" in await ui.page.locator("main").inner_text()


async def test_an_auditor_reads_audit_pages_verifies_and_writes_nothing(
    ui: Ui, accounts: Accounts
) -> None:
    await ui.sign_in(accounts.auditor)
    for path in ("/dashboard/audit", "/dashboard/audit/reports?from=2026-01-01&to=2026-01-31"):
        assert await ui.goto(path) == 200
        assert await ui.write_controls() == 0, path
    assert await ui.goto("/dashboard/audit?action=user.*") == 200
    await _verify(ui)  # a read: auditors may run it
    assert await ui.write_controls() == 0


async def test_the_usage_report_downloads_as_the_contracts_csv(
    ui: Ui, accounts: Accounts, tmp_path: Path
) -> None:
    await ui.sign_in(accounts.tenant_admin)
    assert await ui.goto("/dashboard/audit/reports?from=2026-01-01&to=2026-01-07") == 200
    rows = ui.page.locator("#usage tbody tr")
    assert await rows.count() == 7
    assert (await rows.first.locator("td").first.inner_text()) == "2026-01-01"
    async with ui.page.expect_download() as download:
        await ui.page.get_by_role("link", name="Download usage (CSV)").click()
    saved = tmp_path / "usage.csv"
    await (await download.value).save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0] == USAGE_HEADER and len(lines) == 8
    assert lines[1].startswith("2026-01-01,")
    async with ui.page.expect_download() as download:
        await ui.page.get_by_role("link", name="Download the ledger (CSV)").click()
    await (await download.value).save_as(saved)
    header = saved.read_text().splitlines()[0]
    assert header == "id,at,user,kind,amount,balance_after,reference,batch_id,job_id"
    # A period the report refuses: the page says why.
    assert await ui.goto("/dashboard/audit/reports?from=2026-02-01&to=2026-01-01") == 400
    assert "'to' is before 'from'" in await ui.page.get_by_role("alert").inner_text()
