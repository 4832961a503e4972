"""``swapmeter admin verify``: the ledger check, one line per check, exit 1 when not ok."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from admin.cli import output
from admin.cli.client import Client
from admin.cli.common import JsonOption, UrlOption, run, tenant_id
from admin.cli.config import resolve
from admin.cli.errors import EXIT_ERROR, EXIT_OK


def verify(
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="one tenant's id (default: all you see)")
    ] = None,
    url: UrlOption = None,
    json_out: JsonOption = False,
) -> None:
    """Recompute balances from the ledger and check the audit chain."""
    run(lambda: _verify(tenant_id(tenant) if tenant else None, url, json_out))


def _verify(tenant: str | None, url: str | None, json_out: bool) -> int:
    target = resolve(url)
    params = {"tenant_id": tenant} if tenant else None
    with Client(target.url, target.token) as client:
        result: dict[str, Any] = client.call("GET", "/admin/ledger/verify", params=params).data
    if json_out:
        output.emit_json(result)
    else:
        mismatches = result.get("mismatches") or []
        scope = f"tenant {result.get('tenant_id')}" if result.get("tenant_id") else "all tenants"
        output.line(f"scope: {scope}")
        output.line(f"accounts checked: {result.get('accounts_checked', 0):,}")
        output.line(
            "balances, holds and jobs match the ledger: "
            + ("ok" if not mismatches else f"NOT OK, {len(mismatches)} mismatches")
        )
        for m in mismatches:
            output.line("  " + ", ".join(f"{k}={v}" for k, v in m.items() if v is not None))
        chain = "ok" if result.get("audit_chain_ok") else "BROKEN"
        if result.get("audit_chain_problem"):
            chain += f" ({result['audit_chain_problem']})"
        output.line("audit chain: " + chain)
        output.line("verify: " + ("ok" if result.get("ok") else "NOT OK"))
    return EXIT_OK if result.get("ok") else EXIT_ERROR
