"""Every ORM model, imported once so that ``Base.metadata`` knows all tables (Alembic, tests)."""

from admin.models import Admin, AuditRecord
from app.db import Base
from app.idempotency.models import IdempotencyRecord
from app.jobs.models import Job, WorkerHeartbeat
from app.tenancy.models import ApiKey, Tenant, User
from app.webhooks.models import TenantWebhookSecret, WebhookDelivery
from billing.models import Account, Hold, LedgerEntry, RechargeBatch, TokenGrant
from billing.pricing import PriceBookRow

__all__ = [
    "Account",
    "Admin",
    "ApiKey",
    "AuditRecord",
    "Base",
    "Hold",
    "IdempotencyRecord",
    "Job",
    "LedgerEntry",
    "PriceBookRow",
    "RechargeBatch",
    "Tenant",
    "TenantWebhookSecret",
    "TokenGrant",
    "User",
    "WebhookDelivery",
    "WorkerHeartbeat",
]
