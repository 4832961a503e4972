"""Every ORM model, imported once so that ``Base.metadata`` knows all tables (Alembic, tests)."""

from app.auth.models import Admin
from app.core.audit import AuditRecord
from app.core.db import Base
from app.core.idempotency.models import IdempotencyRecord
from app.jobs.anomaly.models import AnomalyFlag, AnomalyRules
from app.jobs.models import Job, WorkerHeartbeat
from app.tenancy.models import ApiKey, Tenant, User
from app.webhooks.models import TenantWebhookSecret, WebhookDelivery
from billing.models import (
    Account,
    Hold,
    LedgerEntry,
    RechargeBatch,
    TokenGrant,
    UsageActiveUser,
    UsageDaily,
    UsageDelta,
)
from billing.pricing import PriceBookRow

__all__ = [
    "Account",
    "Admin",
    "AnomalyFlag",
    "AnomalyRules",
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
    "UsageActiveUser",
    "UsageDaily",
    "UsageDelta",
    "User",
    "WebhookDelivery",
    "WorkerHeartbeat",
]
