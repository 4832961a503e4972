"""Every SQL statement of a hold: a swap's Tokens held, captured (or released), refunded.

A hold is the one way a job spends Tokens (``billing/holds.py`` says what each statement
means and runs it). Each of these is ONE statement that locks the hold (when there is
one) and then its account, writes the ledger entries and moves ``balance`` and ``held``
(see ``billing/repository.py`` for the lock order every money statement keeps).

A swap's hold is made in the very statement that queues its job, and captured or released
in the very statement that finishes it: one round trip each, and never a job without its
hold nor a hold settled for a job that was not finished. The job's own SQL stays in
``app/jobs``; it comes here as the text of a CTE (``held_with``, ``captured_with``,
reached through ``billing.holds``), and the money side of those statements is written
here and nowhere else.
"""

from __future__ import annotations

import functools

from sqlalchemy import TextClause, text

from billing.pricing import CURRENT_VERSION_SQL
from billing.repository import ENTRY_COLUMNS, ON_KEY_CONFLICT

# A hold as the service shows it (HoldView): CAPTURE and RELEASE return it from their own
# rows, HOLD_BY_REFERENCE reads it. ``h`` is the hold, ``acc`` its account after the call.
_HOLD_VIEW = (
    "h.id, h.reference, h.account_id, h.amount, h.captured, h.released, h.refunded,"
    " h.status, h.price_version, h.multiplier, acc.balance, acc.held"
)


def hold_ctes(gate: str = "true") -> str:
    """The CTEs of a hold, ``acc`` (the user account, locked), ``h`` (the hold, when made),
    ``entry`` and ``upd`` (``HOLD``, ``held_with``). The hold is made only when ``gate``
    (SQL over the statement's own CTEs) is true, the account is active and ``:amount`` is
    available.

    Parameters: ``:tenant_id``, ``:user_id``, ``:reference``, ``:amount``,
    ``:price_version``, ``:multiplier`` (the peak multiplier ``:amount`` was priced at, 1
    without one), ``:operator``.
    """
    return f"""
    acc AS (
        SELECT id, balance, held, status FROM accounts
        WHERE tenant_id = :tenant_id AND user_id = :user_id AND kind = 'user'
        FOR UPDATE
    ),
    h AS (
        INSERT INTO holds (tenant_id, account_id, reference, amount, price_version, multiplier)
        SELECT :tenant_id, acc.id, :reference, :amount, :price_version,
               CAST(:multiplier AS numeric) FROM acc
        WHERE acc.status = 'active' AND acc.balance - acc.held >= :amount AND ({gate})
        ON CONFLICT (tenant_id, reference) DO NOTHING
        RETURNING id, account_id, amount
    ),
    entry AS (
        INSERT INTO ledger_entries ({ENTRY_COLUMNS})
        SELECT :tenant_id, h.account_id, h.account_id, h.amount, 'hold', :reference, :operator,
               NULL, :reference, h.id, acc.balance, acc.held + h.amount
        FROM h, acc
        RETURNING id
    ),
    upd AS (
        UPDATE accounts a SET held = a.held + h.amount, updated_at = now()
        FROM h WHERE a.id = h.account_id
        RETURNING a.balance, a.held
    )"""


# What a hold statement answers (``hold_ctes`` then this): whether the hold was made
# (hold_id), and if not why (the account's status and what it had available).
HOLD_OUTCOME = (
    "acc.id AS account_id, acc.status AS account_status, acc.balance - acc.held AS available,"
    " h.id AS hold_id, upd.balance, upd.held"
)

HOLD = text(
    f"""
    WITH {hold_ctes()}
    SELECT {HOLD_OUTCOME}
    FROM acc LEFT JOIN h ON true LEFT JOIN upd ON true
    """
)


def capture_ctes(gate: str = "true") -> str:
    """The CTEs of a capture, ``h`` (the hold, settled), ``acc`` (its account), ``rev``,
    ``entries`` and ``earned`` (``CAPTURE``, ``captured_with``). Only a hold still held,
    of at least ``:amount``, and only when ``gate`` (SQL over the statement's own CTEs) is
    true. ``:amount`` 0 releases the whole hold; the release entry carries ``:reason``.

    Parameters: ``:tenant_id``, ``:reference``, ``:amount``, ``:operator``, ``:reason``.
    """
    return f"""
    h AS (
        UPDATE holds
        SET status = CASE WHEN :amount = 0 THEN 'released' ELSE 'captured' END,
            captured = :amount, released = amount - :amount, settled_at = now()
        WHERE tenant_id = :tenant_id AND reference = :reference AND status = 'held'
          AND amount >= :amount AND ({gate})
        RETURNING id, account_id, reference, amount, captured, released, refunded, status,
                  price_version, multiplier
    ),
    acc AS (
        UPDATE accounts a
        SET balance = a.balance - h.captured, held = a.held - h.amount, updated_at = now()
        FROM h WHERE a.id = h.account_id
        RETURNING a.id, a.balance, a.held
    ),
    rev AS (SELECT id FROM accounts WHERE tenant_id = :tenant_id AND kind = 'revenue'),
    entries AS (
        INSERT INTO ledger_entries ({ENTRY_COLUMNS})
        SELECT :tenant_id, acc.id,
               CASE WHEN x.kind = 'capture' THEN rev.id ELSE acc.id END,
               x.amount, x.kind, :reference, :operator,
               CASE WHEN x.kind = 'release' THEN CAST(:reason AS text) END,
               :reference, h.id, acc.balance,
               CASE WHEN x.kind = 'capture' THEN acc.held + h.released ELSE acc.held END
        FROM h, acc, rev,
             LATERAL (VALUES (1, 'capture', h.captured), (2, 'release', h.released))
                 AS x(ord, kind, amount)
        WHERE x.amount > 0
        ORDER BY x.ord
        RETURNING id
    ),
    earned AS (
        UPDATE accounts a SET balance = a.balance + h.captured, updated_at = now()
        FROM h, acc, rev WHERE a.id = rev.id AND h.captured > 0
        RETURNING a.id
    )"""


# What a capture statement answers of the hold it settled (``capture_ctes`` then this);
# all null when it settled none.
SETTLED = (
    "h.id AS hold_id, h.account_id AS hold_account_id, h.captured AS hold_captured,"
    " h.released AS hold_released"
)

CAPTURE = text(
    f"""
    WITH {capture_ctes()}
    SELECT {_HOLD_VIEW}, {SETTLED} FROM h JOIN acc ON true
    """
)

RELEASE = text(
    f"""
    WITH h AS (
        UPDATE holds SET status = 'released', released = amount, settled_at = now()
        WHERE tenant_id = :tenant_id AND reference = :reference AND status = 'held'
        RETURNING id, account_id, reference, amount, captured, released, refunded, status,
                  price_version, multiplier
    ),
    acc AS (
        UPDATE accounts a SET held = a.held - h.amount, updated_at = now()
        FROM h WHERE a.id = h.account_id
        RETURNING a.id, a.balance, a.held
    ),
    entry AS (
        INSERT INTO ledger_entries ({ENTRY_COLUMNS})
        SELECT :tenant_id, acc.id, acc.id, h.amount, 'release', :reference, :operator, :reason,
               :reference, h.id, acc.balance, acc.held
        FROM h, acc
        RETURNING id
    )
    SELECT {_HOLD_VIEW} FROM h JOIN acc ON true
    """
)

REFUND = text(
    f"""
    WITH h AS (
        SELECT id, account_id, captured, refunded FROM holds
        WHERE tenant_id = :tenant_id AND reference = :reference AND status = 'captured'
        FOR UPDATE
    ),
    acc AS (
        SELECT a.id, a.balance, a.held FROM accounts a JOIN h ON a.id = h.account_id
        FOR UPDATE OF a
    ),
    rev AS (SELECT id FROM accounts WHERE tenant_id = :tenant_id AND kind = 'revenue'),
    entry AS (
        INSERT INTO ledger_entries ({ENTRY_COLUMNS})
        SELECT :tenant_id, rev.id, acc.id, :amount, 'refund', :reference, :operator, :reason,
               :idempotency_key, h.id, acc.balance + :amount, acc.held
        FROM h, acc, rev
        WHERE h.refunded + :amount <= h.captured
        {ON_KEY_CONFLICT}
        RETURNING id, hold_id, to_account_id, amount, balance_after, held_after, created_at
    ),
    refunded AS (
        UPDATE holds SET refunded = holds.refunded + e.amount
        FROM entry e WHERE holds.id = e.hold_id
        RETURNING holds.refunded
    ),
    credited AS (
        UPDATE accounts a SET balance = a.balance + e.amount, updated_at = now()
        FROM entry e WHERE a.id = e.to_account_id
        RETURNING a.id
    ),
    debited AS (
        UPDATE accounts a SET balance = a.balance - e.amount, updated_at = now()
        FROM entry e, rev, credited WHERE a.id = rev.id
        RETURNING a.id
    )
    SELECT h.id AS hold_id, h.captured, h.refunded AS refunded_before, acc.id AS account_id,
           e.id AS entry_id, e.balance_after, e.held_after, e.created_at,
           (SELECT count(*) FROM refunded) AS hold_updated
    FROM h JOIN acc ON true LEFT JOIN entry e ON true
    """
)

HOLD_BY_REFERENCE = text(
    f"""
    SELECT {_HOLD_VIEW} FROM holds h JOIN accounts acc ON acc.id = h.account_id
    WHERE h.tenant_id = :tenant_id AND h.reference = :reference
    """
)


# ---------------------------------------------------------------------------------------
# A hold made, or settled, in the statement that writes what it is for (a swap's job)
# ---------------------------------------------------------------------------------------


@functools.cache  # one statement per caller: its record is a constant of its module
def held_with(record: str, record_columns: str) -> TextClause:
    """One statement that holds ``:amount`` for ``:reference`` while the tenant's price
    book is still at ``:price_version`` and then, only when the hold was made, writes the
    caller's ``record``: a data-modifying CTE body selecting ``FROM h`` (it becomes the
    CTE ``rec``). It answers ``current_price_version`` (another than ``:price_version``:
    a stale price, nothing written), ``HOLD_OUTCOME`` and ``record_columns`` (SQL over
    ``rec``). Parameters: ``hold_ctes``'s and the record's own.
    """
    return text(
        f"""
        WITH book AS (SELECT {CURRENT_VERSION_SQL} AS version),
        {hold_ctes("(SELECT version FROM book) = :price_version")},
        rec AS ({record})
        SELECT book.version AS current_price_version, {HOLD_OUTCOME}, {record_columns}
        FROM book LEFT JOIN acc ON true LEFT JOIN h ON true LEFT JOIN upd ON true
             LEFT JOIN rec ON true
        """
    )


@functools.cache
def captured_with(record: str, record_columns: str) -> TextClause:
    """One statement that writes the caller's ``record`` (a data-modifying CTE body, the
    CTE ``rec``) and then, only when it wrote a row, captures ``:amount`` of the hold
    ``:reference`` (``capture_ctes``: 0 releases it all, with ``:reason``). It answers
    ``record_columns`` (SQL over ``rec``) and ``SETTLED``, one row per record written.
    Parameters: ``capture_ctes``'s and the record's own.
    """
    return text(
        f"""
        WITH rec AS ({record}),
        {capture_ctes("EXISTS (SELECT 1 FROM rec)")}
        SELECT {record_columns}, {SETTLED}
        FROM rec LEFT JOIN h ON true
        """
    )
