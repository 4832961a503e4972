"""Each user's last active day, so "active users since D" is an index range, not a
distinct count.

The overview's periods (today, 7 days, 30 days) all end today, and its "active users"
counted the distinct users of ``usage_active_users`` over the period: one row per user
and day, 3,000,000 rows for 100,000 daily users over 30 days, read and de-duplicated on
every page view (about 250 ms). ``usage_last_active`` keeps one row per user with the
last UTC day they held Tokens for a swap; "active since D" is then the count of its rows
with ``day >= D`` (index ``(tenant_id, day)``).

It is written by the same trigger, and only when ``usage_active_users`` gains a row (a
user's first swap of a day): one more row write per user and day, none per swap.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_DAY = "((e.created_at) AT TIME ZONE 'UTC')::date"

# usage_ledger_rollup of revision 0012, plus the last active day.
_ROLLUP = """
CREATE OR REPLACE FUNCTION usage_ledger_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_deltas (tenant_id, day, metric, count, tokens)
    SELECT e.tenant_id, {day}, 'ledger:' || e.kind, count(*),
           sum(CASE WHEN e.kind IN ('adjustment', 'adjust') AND NOT EXISTS
                        (SELECT 1 FROM accounts a WHERE a.id = e.to_account_id
                         AND a.kind = 'user')
                    THEN -e.amount ELSE e.amount END)
    FROM new_entries e
    GROUP BY 1, 2, 3;
    WITH fresh AS (
        INSERT INTO usage_active_users (tenant_id, day, account_id)
        SELECT DISTINCT e.tenant_id, {day}, e.from_account_id
        FROM new_entries e WHERE e.kind = 'hold'
        ON CONFLICT DO NOTHING
        RETURNING tenant_id, day, account_id
    ),
    last_active AS (
        {last_active}
    )
    INSERT INTO usage_deltas (tenant_id, day, metric, count)
    SELECT tenant_id, day, 'active_users', count(*) FROM fresh GROUP BY 1, 2;
    RETURN NULL;
END $$;
"""

_LAST_ACTIVE = """INSERT INTO usage_last_active (tenant_id, account_id, day)
        SELECT tenant_id, account_id, max(day) FROM fresh GROUP BY 1, 2
        ON CONFLICT (tenant_id, account_id)
        DO UPDATE SET day = greatest(usage_last_active.day, EXCLUDED.day)
        RETURNING 1"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE usage_last_active (
            tenant_id uuid NOT NULL,
            account_id bigint NOT NULL,
            day date NOT NULL,
            PRIMARY KEY (tenant_id, account_id)
        )
        """
    )
    op.execute(
        "INSERT INTO usage_last_active (tenant_id, account_id, day) "
        "SELECT tenant_id, account_id, max(day) FROM usage_active_users GROUP BY 1, 2"
    )
    op.execute(
        "CREATE INDEX ix_usage_last_active_tenant_id_day ON usage_last_active (tenant_id, day)"
    )
    op.execute(_ROLLUP.format(day=_DAY, last_active=_LAST_ACTIVE))


def downgrade() -> None:
    op.execute(_ROLLUP.format(day=_DAY, last_active="SELECT 1"))
    op.execute("DROP TABLE usage_last_active")
