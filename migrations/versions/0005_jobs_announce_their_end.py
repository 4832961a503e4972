"""Jobs announce their own end: a trigger NOTIFYs swapmeter_job_done when a job becomes final.

Whatever makes a job succeeded, failed or canceled (a worker finishing it, a cancel while
queued, housekeeping ending an abandoned one) is announced by the database itself, in the
same transaction, heard at commit: no code path can forget it, and it costs the finishing
transaction no round trip. The payload is "<job id> <the final row as JSON>", or the id
alone when the row would not fit a notification (8000 bytes); waiting requests answer
from the row it carries (app.jobs.events.JobWaiters).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION jobs_announce_end() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            payload text := NEW.id::text || ' ' || to_jsonb(NEW)::text;
        BEGIN
            IF octet_length(payload) > 7000 THEN
                payload := NEW.id::text;
            END IF;
            PERFORM pg_notify('swapmeter_job_done', payload);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_announce_end
        AFTER UPDATE OF status ON jobs
        FOR EACH ROW
        WHEN (NEW.status IN ('succeeded', 'failed', 'canceled')
              AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION jobs_announce_end()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_announce_end ON jobs")
    op.execute("DROP FUNCTION jobs_announce_end()")
