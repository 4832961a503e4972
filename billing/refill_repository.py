"""The SQL of the daily refill (billing/daily_refill.py): which plans are due, and the two
statements that refill a chunk of a plan's users.

A chunk is one transaction of three statements, whatever its size:

1. ``REFILL_EXPIRE`` picks the next users of the plan not refilled for the day (active
   accounts, in account id order), locks their accounts in id order and expires what is
   left of their daily grants (every active lot a plan granted; the grant expiry's own
   rules, so Tokens that a running job holds are left for its capture). It returns the
   accounts it locked.
2. ``REFILL_GRANT`` credits each of those accounts the plan's amount, advancing
   ``accounts.daily_refill_day`` in the same UPDATE and only while it is before the day:
   the guard that pays each user once a day. Re-checked under the lock, so a second
   runner that waited for the first one's locks finds nothing left to pay. Each entry
   also carries the key ``daily:<day>:<account>``, unique in the ledger.
3. The tenant's issuance account gives what was granted, in the same statement (2).

Lock order as everywhere in billing: user accounts in id order, then the tenant's
issuance account.
"""

from __future__ import annotations

from sqlalchemy import text

from billing.repository import EXPIRE_DUE_LOTS

# A runner per plan at a time (the others skip it this round). Not what makes the refill
# exactly once (the accounts' guard is): it keeps two workers from queueing on the same locks.
PLAN_LOCK = "SELECT pg_try_advisory_xact_lock(73217004, ($1 % 2147483647)::int)"

DUE_PLANS = text(
    """
    SELECT p.id, p.tenant_id, p.name, p.daily_free_tokens, p.refill_time, p.timezone,
           p.next_refill_at
    FROM plans p JOIN tenants t ON t.id = p.tenant_id AND t.status = 'active'
    WHERE p.next_refill_at <= :now
      AND (CAST(:tenant_id AS uuid) IS NULL OR p.tenant_id = :tenant_id)
      AND (CAST(:plan_id AS bigint) IS NULL OR p.id = :plan_id)
    ORDER BY p.next_refill_at, p.id
    LIMIT :limit
    """
)

# Done for ``day``; unless the plan was written or gained users meanwhile (then it stays
# due and the next round pays those).
PLAN_DONE = text(
    """
    UPDATE plans SET refilled_day = GREATEST(refilled_day, CAST(:day AS date)),
                     next_refill_at = :next_refill_at
    WHERE id = :plan_id AND next_refill_at = :seen
    RETURNING id
    """
)

ISSUANCE_ACCOUNT = "SELECT id FROM accounts WHERE tenant_id = $1 AND kind = 'issuance'"

# $1 plan id, $2 the local day, $3 the last account id of the previous chunk, $4 chunk size.
REFILL_EXPIRE = (
    """
    WITH due_accounts AS (
        SELECT a.id AS account_id FROM users u JOIN accounts a ON a.user_id = u.id
        WHERE u.plan_id = $1 AND a.status = 'active'
          AND (a.daily_refill_day IS NULL OR a.daily_refill_day < $2) AND a.id > $3
        ORDER BY a.id
        LIMIT $4
    ),
    locked AS (
        -- Re-checked on the newest version once locked: a runner that waited for another's
        -- locks skips the accounts that one refilled.
        SELECT a.id, a.tenant_id, a.balance, a.held FROM accounts a
        WHERE a.id IN (SELECT account_id FROM due_accounts) AND a.status = 'active'
          AND (a.daily_refill_day IS NULL OR a.daily_refill_day < $2)
        ORDER BY a.id
        FOR UPDATE OF a
    ),
    due AS (
        -- Every daily grant left, whatever plan gave it and whenever it was to expire: the
        -- daily grant is topped up to the plan's amount, never added to.
        SELECT g.id, g.account_id, g.remaining, g.expired_amount, g.expires_at
        FROM token_grants g JOIN locked l ON l.id = g.account_id
        WHERE g.status = 'active' AND g.plan_id IS NOT NULL
        FOR UPDATE OF g
    ),
"""
    + EXPIRE_DUE_LOTS
    + """
    SELECT (SELECT count(*) FROM due_accounts) AS candidates,
           (SELECT max(account_id) FROM due_accounts) AS last_id,
           (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM locked) AS accounts,
           (SELECT coalesce(sum(amount), 0) FROM entries) AS expired
    """
)

# $1 the accounts REFILL_EXPIRE locked, $2 plan id, $3 day, $4 amount, $5 tenant id,
# $6 issuance account, $7 expires_at (the next refill), $8 label, $9 reference,
# $10 the entries' key prefix ('daily:<day>:').
REFILL_GRANT = """
    WITH target AS (
        SELECT a.id FROM accounts a JOIN users u ON u.id = a.user_id
        WHERE a.id = ANY($1::bigint[]) AND u.plan_id = $2 AND a.status = 'active'
          AND (a.daily_refill_day IS NULL OR a.daily_refill_day < $3)
        ORDER BY a.id
        FOR UPDATE OF a
    ),
    credited AS (
        UPDATE accounts a SET balance = a.balance + $4, daily_refill_day = $3, updated_at = now()
        FROM target t
        WHERE a.id = t.id AND (a.daily_refill_day IS NULL OR a.daily_refill_day < $3)
        RETURNING a.id, a.balance, a.held
    ),
    entries AS (
        INSERT INTO ledger_entries (tenant_id, from_account_id, to_account_id, amount, kind,
                                    reference, operator, reason, idempotency_key,
                                    balance_after, held_after)
        SELECT $5, $6, c.id, $4, 'grant', $9, 'system', 'daily free Tokens',
               $10::text || c.id::text, c.balance, c.held
        FROM credited c WHERE $4 > 0
        ORDER BY c.id
        RETURNING id, to_account_id, amount
    ),
    lots AS (
        INSERT INTO token_grants (tenant_id, account_id, entry_id, amount, remaining,
                                  expires_at, label, plan_id)
        SELECT $5, e.to_account_id, e.id, e.amount, e.amount, $7, $8, $2
        FROM entries e ORDER BY e.to_account_id
        RETURNING id
    ),
    issued AS (
        UPDATE accounts a
        SET balance = a.balance - (SELECT sum(amount) FROM entries), updated_at = now()
        WHERE a.id = $6 AND EXISTS (SELECT 1 FROM entries)
        RETURNING a.id
    )
    SELECT (SELECT count(*) FROM credited) AS refilled,
           (SELECT count(*) FROM entries) AS entries,
           (SELECT coalesce(sum(amount), 0) FROM entries) AS granted,
           (SELECT count(*) FROM lots) AS lots,
           (SELECT count(*) FROM issued) AS issued
"""
