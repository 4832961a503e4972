"""Every ORM model, imported once so that ``Base.metadata`` knows all tables (Alembic, tests)."""

from admin.models import Admin, AuditRecord
from app.db import Base
from app.idempotency.models import IdempotencyRecord
from app.tenancy.models import ApiKey, Tenant, User
from billing.models import Account

__all__ = ["Account", "Admin", "ApiKey", "AuditRecord", "Base", "IdempotencyRecord", "Tenant", "User"]
