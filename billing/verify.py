"""Ledger verification: recompute every balance and held from the entries, and compare.

One set-based pass (a GROUP BY over the entries joined to the accounts), so checking
100,000 accounts is one query, not 100,000. Reported mismatches:

- ``balance``: the stored balance differs from sum(in) - sum(out) of its entries;
- ``held``: the stored held differs from sum(hold) - sum(release) - sum(capture);
- ``open_holds``: the stored held differs from the holds still open on the account;
- ``zero_sum``: the balances of a tenant's accounts do not add up to zero;
- ``account_reference``: entries name an account that does not exist or belongs to another
  tenant (the ledger table has no foreign keys, see migration 0003; this check replaces
  them);
- ``hold_entries``: a hold's amount, captured, released or refunded differs from what its
  own entries (hold, capture, release, refund) moved.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing import repository as repo

MAX_MISMATCHES = 1000


@dataclass
class LedgerCheck:
    accounts_checked: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


async def check_ledger(session: AsyncSession, tenant_id: uuid.UUID | None = None) -> LedgerCheck:
    """Recompute balances (all tenants, or one) and list what does not match."""
    params: dict[str, Any] = {"max_mismatches": MAX_MISMATCHES}
    if tenant_id is not None:
        params["tenant_id"] = tenant_id
    row = await repo.run(session, repo.verify_statement(tenant_id is not None), params)
    assert row is not None
    mismatches: list[dict[str, Any]] = []
    for m in row.mismatches:
        base = {
            "tenant_id": m["tenant_id"],
            "account_id": m["id"],
            "account_kind": m["kind"],
            "user_id": m["user_id"],
        }
        if m["balance"] != m["recomputed_balance"]:
            mismatches.append(
                {
                    **base,
                    "check": "balance",
                    "stored": m["balance"],
                    "recomputed": m["recomputed_balance"],
                }
            )
        if m["held"] != m["recomputed_held"]:
            mismatches.append(
                {**base, "check": "held", "stored": m["held"], "recomputed": m["recomputed_held"]}
            )
        if m["held"] != m["open_holds"]:
            mismatches.append(
                {**base, "check": "open_holds", "stored": m["held"], "recomputed": m["open_holds"]}
            )
    for z in row.unbalanced_tenants:
        mismatches.append(
            {
                "tenant_id": z["tenant_id"],
                "account_id": None,
                "account_kind": None,
                "user_id": None,
                "check": "zero_sum",
                "stored": z["total"],
                "recomputed": 0,
            }
        )
    for b in row.bad_references:
        where = "missing" if b["account_tenant_id"] is None else "of another tenant"
        mismatches.append(
            {
                "tenant_id": b["tenant_id"],
                "account_id": b["account_id"],
                "account_kind": None,
                "user_id": None,
                "check": "account_reference",
                "stored": None,
                "recomputed": None,
                "detail": f"ledger entries name account {b['account_id']}, which is {where}",
            }
        )
    for h in row.bad_holds:
        stored = (h["amount"], h["captured"], h["released"], h["refunded"])
        moved = (
            h["entries_amount"],
            h["entries_captured"],
            h["entries_released"],
            h["entries_refunded"],
        )
        mismatches.append(
            {
                "tenant_id": h["tenant_id"],
                "account_id": h["account_id"],
                "account_kind": h["account_kind"],
                "user_id": h["user_id"],
                "check": "hold_entries",
                "stored": None,
                "recomputed": None,
                "detail": (
                    f"hold {h['reference']!r} ({h['status']}) says amount, captured, released, "
                    f"refunded = {stored}; its ledger entries moved {moved}"
                ),
            }
        )
    return LedgerCheck(accounts_checked=row.accounts_checked, mismatches=mismatches)
