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
  own entries (hold, capture, release, refund) moved;
- ``job_hold`` (``hold_mismatches``): a metered job's Tokens disagree with its hold (no
  hold, another amount, or an ended job whose hold is still held or captured other than
  the job's charge). It reads the jobs table that billing settles.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

MAX_MISMATCHES = 1000


# Recompute every balance and held from the entries in one pass (GROUP BY). The {...}
# are the filters of one tenant (``_statement``), empty for all tenants.
_RECOMPUTE = """
    WITH moves AS (
        SELECT tenant_id, to_account_id AS account_id, amount AS d_balance,
               CASE kind WHEN 'hold' THEN amount WHEN 'release' THEN -amount ELSE 0 END
                   AS d_held
        FROM ledger_entries {to_filter}
        UNION ALL
        SELECT tenant_id, from_account_id, -amount,
               CASE kind WHEN 'capture' THEN -amount ELSE 0 END
        FROM ledger_entries {from_filter}
    ),
    by_tenant AS (
        SELECT account_id, tenant_id, sum(d_balance) AS balance, sum(d_held) AS held
        FROM moves GROUP BY account_id, tenant_id
    ),
    recomputed AS (
        SELECT account_id, sum(balance) AS balance, sum(held) AS held
        FROM by_tenant GROUP BY account_id
    ),
    bad_references AS (
        -- Entries naming an account that does not exist, or one of another tenant.
        SELECT b.tenant_id, b.account_id, a.tenant_id AS account_tenant_id
        FROM by_tenant b LEFT JOIN accounts a ON a.id = b.account_id
        WHERE a.id IS NULL OR a.tenant_id <> b.tenant_id
    ),
    open_holds AS (
        SELECT account_id, sum(amount) AS held FROM holds
        WHERE status = 'held' {hold_filter}
        GROUP BY account_id
    ),
    checked AS (
        SELECT a.id, a.tenant_id, a.kind, a.user_id, a.balance, a.held,
               coalesce(r.balance, 0) AS recomputed_balance,
               coalesce(r.held, 0) AS recomputed_held,
               coalesce(h.held, 0) AS open_holds
        FROM accounts a
        LEFT JOIN recomputed r ON r.account_id = a.id
        LEFT JOIN open_holds h ON h.account_id = a.id
        {account_filter}
    ),
    zero_sum AS (
        SELECT tenant_id, sum(balance) AS total FROM checked
        GROUP BY tenant_id HAVING sum(balance) <> 0
    ),
    hold_moves AS (
        SELECT hold_id,
               coalesce(sum(amount) FILTER (WHERE kind = 'hold'), 0) AS amount,
               coalesce(sum(amount) FILTER (WHERE kind = 'capture'), 0) AS captured,
               coalesce(sum(amount) FILTER (WHERE kind = 'release'), 0) AS released,
               coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunded
        FROM ledger_entries WHERE hold_id IS NOT NULL {entries_of_holds}
        GROUP BY hold_id
    ),
    bad_holds AS (
        -- A hold whose amount, capture, release or refunds are not what its entries
        -- moved (a settled hold edited, or flipped from captured to released).
        SELECT h.tenant_id, h.id, h.account_id, a.kind AS account_kind, a.user_id,
               h.reference, h.status, h.amount, h.captured, h.released, h.refunded,
               coalesce(m.amount, 0) AS entries_amount,
               coalesce(m.captured, 0) AS entries_captured,
               coalesce(m.released, 0) AS entries_released,
               coalesce(m.refunded, 0) AS entries_refunded
        FROM holds h JOIN accounts a ON a.id = h.account_id
        LEFT JOIN hold_moves m ON m.hold_id = h.id
        {holds_of_tenant}
    )
"""

# What the check reports, from _RECOMPUTE's CTEs: at most :max_mismatches of each kind.
_REPORT = """
    SELECT
        (SELECT count(*) FROM checked) AS accounts_checked,
        (SELECT coalesce(json_agg(m ORDER BY m.id), '[]') FROM (
            SELECT * FROM checked
            WHERE balance <> recomputed_balance OR held <> recomputed_held
               OR held <> open_holds
            ORDER BY id LIMIT :max_mismatches
        ) m) AS mismatches,
        (SELECT coalesce(json_agg(z), '[]') FROM zero_sum z) AS unbalanced_tenants,
        (SELECT coalesce(json_agg(b), '[]') FROM (
            SELECT * FROM bad_references ORDER BY account_id LIMIT :max_mismatches
        ) b) AS bad_references,
        (SELECT coalesce(json_agg(bh ORDER BY bh.id), '[]') FROM (
            SELECT * FROM bad_holds
            WHERE (amount, captured, released, refunded)
                  <> (entries_amount, entries_captured, entries_released, entries_refunded)
            ORDER BY id LIMIT :max_mismatches
        ) bh) AS bad_holds
"""


def _statement(tenant_filtered: bool) -> TextClause:
    if not tenant_filtered:
        filters = dict.fromkeys(
            (
                "to_filter",
                "from_filter",
                "account_filter",
                "hold_filter",
                "holds_of_tenant",
                "entries_of_holds",
            ),
            "",
        )
    else:
        # A tenant's entries are found through its accounts (the from/to indexes), so
        # every entry touching one of its accounts counts, whichever tenant it names.
        accounts_of_tenant = "(SELECT id FROM accounts WHERE tenant_id = :tenant_id)"
        filters = {
            "to_filter": f"WHERE to_account_id IN {accounts_of_tenant}",
            "from_filter": f"WHERE from_account_id IN {accounts_of_tenant}",
            "account_filter": "WHERE a.tenant_id = :tenant_id",
            "hold_filter": "AND tenant_id = :tenant_id",
            "holds_of_tenant": "WHERE h.tenant_id = :tenant_id",
            "entries_of_holds": (
                "AND hold_id IN (SELECT id FROM holds WHERE tenant_id = :tenant_id)"
            ),
        }
    return text(_RECOMPUTE.format(**filters) + _REPORT)


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
    row = (await session.execute(_statement(tenant_id is not None), params)).one()
    mismatches = [found for m in row.mismatches for found in _account_mismatches(m)]
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


def _account_mismatches(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The balance, held and open_holds findings of one account of the report."""
    base = {
        "tenant_id": m["tenant_id"],
        "account_id": m["id"],
        "account_kind": m["kind"],
        "user_id": m["user_id"],
    }
    found = []
    if m["balance"] != m["recomputed_balance"]:
        found.append(
            {
                **base,
                "check": "balance",
                "stored": m["balance"],
                "recomputed": m["recomputed_balance"],
            }
        )
    if m["held"] != m["recomputed_held"]:
        found.append(
            {**base, "check": "held", "stored": m["held"], "recomputed": m["recomputed_held"]}
        )
    if m["held"] != m["open_holds"]:
        found.append(
            {**base, "check": "open_holds", "stored": m["held"], "recomputed": m["open_holds"]}
        )
    return found


# -- every metered job against its hold (the check named job_hold) --------------------------


async def hold_mismatches(
    session: AsyncSession, tenant_id: uuid.UUID | None, limit: int
) -> list[dict[str, Any]]:
    """The ledger check's ``job_hold`` findings (``disagreeing_with_holds``), in the
    shape of billing's own mismatches."""
    found = []
    for j in await disagreeing_with_holds(session, tenant_id, limit):
        hold = (
            f"its hold {j.hold_reference!r} is missing"
            if j.hold_status is None
            else f"its hold is {j.hold_status}: amount {j.hold_amount}, captured "
            f"{j.hold_captured}, multiplier {j.hold_multiplier}"
        )
        found.append(
            {
                "tenant_id": j.tenant_id,
                "account_id": j.account_id,
                "account_kind": j.account_kind,
                "user_id": j.user_id,
                "check": "job_hold",
                "stored": j.tokens_charged,
                "recomputed": j.hold_captured,
                "detail": f"job {j.id} is {j.status}, held {j.tokens_held} at multiplier "
                f"{j.multiplier} and charged {j.tokens_charged}; {hold}",
            }
        )
    return found


async def disagreeing_with_holds(
    session: AsyncSession, tenant_id: uuid.UUID | None, limit: int
) -> list[Any]:
    """Metered jobs (all, or one tenant's) whose Tokens disagree with their hold: no hold,
    ``tokens_held`` other than the hold's amount, a peak multiplier other than the
    hold's, or ended while the hold is still held or with ``tokens_charged`` other than
    what the hold captured."""
    of_tenant = "AND j.tenant_id = :tenant_id" if tenant_id is not None else ""
    rows = await session.execute(
        text(
            f"""
            SELECT j.tenant_id, j.id, j.status, j.tokens_held, j.tokens_charged,
                   j.multiplier, h.multiplier AS hold_multiplier, j.hold_reference,
                   h.account_id, a.kind AS account_kind, a.user_id,
                   h.status AS hold_status, h.amount AS hold_amount,
                   h.captured AS hold_captured
            FROM jobs j
            LEFT JOIN holds h ON h.tenant_id = j.tenant_id AND h.reference = j.hold_reference
            LEFT JOIN accounts a ON a.id = h.account_id
            WHERE j.metered AND j.hold_reference IS NOT NULL {of_tenant}
              AND (h.id IS NULL OR h.amount <> j.tokens_held OR h.multiplier <> j.multiplier
                   OR (j.status IN ('succeeded', 'failed', 'canceled')
                       AND (h.status = 'held' OR h.captured <> j.tokens_charged)))
            ORDER BY j.created_at, j.id
            LIMIT :limit
            """
        ),
        {"tenant_id": tenant_id, "limit": limit},
    )
    return list(rows)
