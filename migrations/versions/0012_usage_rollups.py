"""Daily usage rollups kept by triggers, and the indexes of the reports.

Reports never scan the ledger (docs/architecture.md, "Reports"). Every statement that
inserts ledger entries also appends, in its own transaction, one row per (tenant, UTC day,
kind) to ``usage_deltas`` (a statement-level trigger with a transition table); every job
that ends appends one row too (a row-level trigger that fires only on the end). A delta
row is new for every statement, so concurrent swaps of one tenant never wait on a shared
counter row. The workers' housekeeping folds committed deltas into ``usage_daily`` (one
row per tenant, day and metric); a report sums both. ``usage_active_users`` holds who
held Tokens for a swap on each day, so that the day's count is added once per user.

Existing entries and jobs are folded into ``usage_daily`` here, in one pass.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

# The metric of a ledger entry, and the Tokens it counts: signed for adjustments (a
# credit to the user is positive, a debit negative), the amount for every other kind.
_LEDGER_METRIC = "'ledger:' || e.kind"
_LEDGER_TOKENS = (
    "CASE WHEN e.kind IN ('adjustment', 'adjust') AND NOT EXISTS "
    "(SELECT 1 FROM accounts a WHERE a.id = e.to_account_id AND a.kind = 'user') "
    "THEN -e.amount ELSE e.amount END"
)
_DAY = "(({col}) AT TIME ZONE 'UTC')::date"
_ENDED = "('succeeded', 'failed', 'canceled')"


def upgrade() -> None:
    _run(
        """
        CREATE TABLE usage_deltas (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id uuid NOT NULL,
            day date NOT NULL,
            metric text NOT NULL,
            count bigint NOT NULL,
            tokens bigint NOT NULL DEFAULT 0,
            seconds numeric NOT NULL DEFAULT 0
        );
        --
        CREATE INDEX ix_usage_deltas_tenant_id_day ON usage_deltas (tenant_id, day);
        --
        CREATE TABLE usage_daily (
            tenant_id uuid NOT NULL,
            day date NOT NULL,
            metric text NOT NULL,
            count bigint NOT NULL,
            tokens bigint NOT NULL DEFAULT 0,
            seconds numeric NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, day, metric)
        );
        --
        CREATE TABLE usage_active_users (
            tenant_id uuid NOT NULL,
            day date NOT NULL,
            account_id bigint NOT NULL,
            PRIMARY KEY (tenant_id, day, account_id)
        );
        """
    )
    _run(
        f"""
        CREATE FUNCTION usage_ledger_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO usage_deltas (tenant_id, day, metric, count, tokens)
            SELECT e.tenant_id, {_DAY.format(col="e.created_at")}, {_LEDGER_METRIC},
                   count(*), sum({_LEDGER_TOKENS})
            FROM new_entries e
            GROUP BY 1, 2, 3;
            WITH fresh AS (
                INSERT INTO usage_active_users (tenant_id, day, account_id)
                SELECT DISTINCT e.tenant_id, {_DAY.format(col="e.created_at")}, e.from_account_id
                FROM new_entries e WHERE e.kind = 'hold'
                ON CONFLICT DO NOTHING
                RETURNING tenant_id, day
            )
            INSERT INTO usage_deltas (tenant_id, day, metric, count)
            SELECT tenant_id, day, 'active_users', count(*) FROM fresh GROUP BY 1, 2;
            RETURN NULL;
        END $$;
        --
        CREATE TRIGGER usage_ledger_rollup AFTER INSERT ON ledger_entries
            REFERENCING NEW TABLE AS new_entries
            FOR EACH STATEMENT EXECUTE FUNCTION usage_ledger_rollup();
        --

        CREATE FUNCTION usage_job_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO usage_deltas (tenant_id, day, metric, count, seconds)
            VALUES (NEW.tenant_id, {_DAY.format(col="coalesce(NEW.finished_at, NEW.created_at)")},
                    'job:' || NEW.kind || ':' || NEW.status, 1,
                    CASE WHEN NEW.kind = 'video'
                         THEN coalesce(NEW.seconds_done, 0)::numeric ELSE 0 END);
            RETURN NULL;
        END $$;
        --
        CREATE TRIGGER usage_job_rollup AFTER UPDATE OF status ON jobs
            FOR EACH ROW
            WHEN (OLD.status NOT IN {_ENDED} AND NEW.status IN {_ENDED})
            EXECUTE FUNCTION usage_job_rollup();
        """
    )
    # What is already there, folded once (the triggers count everything from now on).
    _run(
        f"""
        INSERT INTO usage_active_users (tenant_id, day, account_id)
        SELECT DISTINCT e.tenant_id, {_DAY.format(col="e.created_at")}, e.from_account_id
        FROM ledger_entries e WHERE e.kind = 'hold';
        --
        INSERT INTO usage_daily (tenant_id, day, metric, count, tokens, seconds)
        SELECT e.tenant_id, {_DAY.format(col="e.created_at")}, {_LEDGER_METRIC}, count(*),
               sum({_LEDGER_TOKENS}), 0
        FROM ledger_entries e GROUP BY 1, 2, 3
        UNION ALL
        SELECT tenant_id, day, 'active_users', count(*), 0, 0
        FROM usage_active_users GROUP BY 1, 2
        UNION ALL
        SELECT j.tenant_id, {_DAY.format(col="coalesce(j.finished_at, j.created_at)")},
               'job:' || j.kind || ':' || j.status, count(*), 0,
               sum(CASE WHEN j.kind = 'video' THEN coalesce(j.seconds_done, 0)::numeric
                        ELSE 0 END)
        FROM jobs j WHERE j.status IN {_ENDED} GROUP BY 1, 2, 3;
        """
    )
    # The user list: prefix search and order by external id in byte order whatever the
    # database's collation, and by creation time. No index on balances: one would stop
    # every balance update from being HOT (accounts keep fillfactor 50 for that).
    op.execute(
        "CREATE INDEX ix_users_tenant_id_external_id_c "
        'ON users (tenant_id, external_id COLLATE "C")'
    )
    op.create_index("ix_users_tenant_id_created_at_id", "users", ["tenant_id", "created_at", "id"])
    # The export: a tenant's entries of some days, in time order, in keyset batches.
    op.create_index(
        "ix_ledger_entries_tenant_id_created_at_id",
        "ledger_entries",
        ["tenant_id", "created_at", "id"],
    )


def _run(statements: str) -> None:
    """Statements separated by ``--`` lines, one execute each (asyncpg runs one at a time)."""
    for statement in statements.split("\n        --\n"):
        op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_tenant_id_created_at_id", table_name="ledger_entries")
    op.drop_index("ix_users_tenant_id_created_at_id", table_name="users")
    op.drop_index("ix_users_tenant_id_external_id_c", table_name="users")
    op.execute("DROP TRIGGER usage_job_rollup ON jobs")
    op.execute("DROP FUNCTION usage_job_rollup()")
    op.execute("DROP TRIGGER usage_ledger_rollup ON ledger_entries")
    op.execute("DROP FUNCTION usage_ledger_rollup()")
    op.execute("DROP TABLE usage_active_users, usage_daily, usage_deltas")
