"""Every ORM model, imported once so that ``Base.metadata`` knows all tables (Alembic, tests)."""

from admin.models import Admin, AuditRecord
from app.db import Base
from app.idempotency.models import IdempotencyRecord
from app.tenancy.models import ApiKey, Tenant, User
from billing.models import Account, Hold, LedgerEntry, RechargeBatch, TokenGrant

__all__ = [
    "Account",
    "Admin",
    "ApiKey",
    "AuditRecord",
    "Base",
    "Hold",
    "IdempotencyRecord",
    "LedgerEntry",
    "RechargeBatch",
    "Tenant",
    "TokenGrant",
    "User",
]
