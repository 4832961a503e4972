"""Load pricing on a tenant's page, without a browser: a new price book version with a
peak (``{queue_depth_at_least, multiplier}``) shows in the history and in the editor; the
same form again writes nothing; clearing both fields removes the peak; half a peak or a
bad multiplier is refused with the API's message."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from tests.admin.helpers import create_tenant, root_headers
from tests.dashboard.conftest import Accounts
from tests.dashboard.test_ops_http import Browser, _signed_in

PRICES = {
    "image": "2",
    "video_second": "1",
    "enhance_surcharge": "0",
    "enhance_video_second_surcharge": "0",
}


@pytest.fixture
async def root(app: FastAPI, accounts: Accounts) -> AsyncIterator[Browser]:
    async for browser in _signed_in(app, accounts.root):
        yield browser


def _history_row(page: str, version: int) -> str:
    found = re.search(rf'<tr data-version="{version}">(.*?)</tr>', page, re.S)
    assert found, page
    return found.group(1)


async def test_a_new_version_with_a_peak_shows_in_the_history(root: Browser) -> None:
    tenant = (await create_tenant(root.client))["id"]
    url = f"/dashboard/tenants/{tenant}/prices"
    peak = {"peak_queue_depth_at_least": "50", "peak_multiplier": "1.5"}
    saved = await root.post(url, {**PRICES, **peak, "reason": "busy hours"})
    assert saved.status_code == 303 and saved.headers["location"].endswith(
        "flash=prices-saved#prices"
    )
    page = (await root.get(f"/dashboard/tenants/{tenant}")).text
    row = _history_row(page, 1)
    assert "×1.5 from 50 queued" in row and "busy hours" in row
    assert 'name="peak_queue_depth_at_least" inputmode="numeric" value="50"' in page
    assert 'name="peak_multiplier" inputmode="decimal" value="1.5"' in page
    api = await root.client.get(
        f"/api/v1/admin/tenants/{tenant}/pricing", headers=await root_headers(root.client)
    )
    assert api.json()["current"]["peak"] == {"queue_depth_at_least": 50, "multiplier": 1.5}

    # The same form again: no new version.
    again = await root.post(url, {**PRICES, **peak})
    assert again.headers["location"].endswith("flash=prices-unchanged#prices")
    # Both fields cleared: the next version has no peak.
    cleared = await root.post(
        url, {**PRICES, "peak_queue_depth_at_least": "", "peak_multiplier": ""}
    )
    assert cleared.headers["location"].endswith("flash=prices-saved#prices")
    page = (await root.get(f"/dashboard/tenants/{tenant}")).text
    assert "×" not in _history_row(page, 2) and "×1.5" in _history_row(page, 1)

    # Half a peak, or a multiplier out of range: refused, nothing written.
    half = await root.post(url, {**PRICES, "peak_queue_depth_at_least": "10"})
    assert half.status_code == 422 and "peak" in half.text
    for bad in ("1", "1.555", "11", "x"):
        refused = await root.post(
            url, {**PRICES, "peak_queue_depth_at_least": "10", "peak_multiplier": bad}
        )
        assert refused.status_code == 422 and "peak.multiplier" in refused.text, bad
    assert 'data-version="3"' not in (await root.get(f"/dashboard/tenants/{tenant}")).text
