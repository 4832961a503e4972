"""Tenants, their end users and API keys: the use cases, without HTTP and without audit.

The admin service composes these with the ledger (accounts) and the audit log.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import Database
from app.core.errors import (
    Conflict,
    DuplicateEntry,
    Forbidden,
    InvalidApiKey,
    InvalidDisplayName,
    InvalidEmail,
    InvalidExternalId,
    InvalidSlug,
    NotFound,
    UserNotFound,
    storable_form,
    storable_text,
)
from app.tenancy import api_keys, repository
from app.tenancy.repository import ApiKeyCredentials, ApiKeyRow, TenantRow, UserRow

log = logging.getLogger(__name__)

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
_SLUG_RE = re.compile(SLUG_PATTERN.strip("^$"))


def valid_slug(slug: str) -> bool:
    """Whether ``slug`` is one a tenant may have (the whole string: no trailing newline)."""
    return _SLUG_RE.fullmatch(slug) is not None


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_EXTERNAL_ID = 255
MAX_EMAIL = 320
MAX_DISPLAY_NAME = 255


# -- tenants -------------------------------------------------------------------------------


def slugify(name: str) -> str:
    """'Acme Corp.' -> 'acme-corp': lowercase ASCII letters, digits and single dashes."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:64].rstrip("-")


async def create_tenant(session: AsyncSession, *, name: str, slug: str | None) -> TenantRow:
    if slug is None:
        # A name with no Latin letter or digit (say, in Korean) still makes a tenant.
        slug = slugify(name) or f"tenant-{uuid.uuid4().hex[:8]}"
    if not valid_slug(slug):
        raise InvalidSlug(
            "slug must be 1-64 characters of a-z, 0-9 and '-', starting and ending with a "
            "letter or digit"
        )
    tenant = await repository.insert_tenant(session, name=name.strip(), slug=slug)
    if tenant is None:
        raise Conflict(f"A tenant with slug '{slug}' already exists")
    return tenant


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> TenantRow:
    tenant = await repository.get_tenant(session, tenant_id)
    if tenant is None:
        raise NotFound("Tenant not found")
    return tenant


# -- users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportEntry:
    external_id: str
    email: str | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class ImportFailure:
    index: int
    external_id: str
    code: str
    message: str


@dataclass
class ImportResult:
    created: int = 0
    existing: int = 0
    failed: list[ImportFailure] = field(default_factory=list)
    created_user_ids: list[int] = field(default_factory=list)


def _entry_problem(entry: ImportEntry) -> tuple[str, str] | None:
    external_id = entry.external_id
    if not external_id or not external_id.strip():
        return InvalidExternalId.code, "external_id must not be empty"
    if len(external_id) > MAX_EXTERNAL_ID:
        return InvalidExternalId.code, f"external_id must be at most {MAX_EXTERNAL_ID} characters"
    if (
        _CONTROL_RE.search(external_id)
        or external_id != external_id.strip()
        or not storable_text(external_id)
    ):
        return (
            InvalidExternalId.code,
            "external_id must not contain control characters, unpaired surrogates or "
            "surrounding spaces",
        )
    if "/" in external_id or external_id in (".", ".."):
        # It is a segment of the admin URLs (/users/{external_id}/...): a slash would split
        # it, and clients resolve "." and ".." before sending.
        return InvalidExternalId.code, "external_id must not contain '/' nor be '.' or '..'"
    if entry.email is not None and (
        len(entry.email) > MAX_EMAIL
        or not _EMAIL_RE.match(entry.email)
        or not storable_text(entry.email)
    ):
        return InvalidEmail.code, "email is not a valid address"
    if entry.display_name is not None:
        if len(entry.display_name) > MAX_DISPLAY_NAME:
            return (
                InvalidDisplayName.code,
                f"display_name must be at most {MAX_DISPLAY_NAME} characters",
            )
        if not storable_text(entry.display_name):
            problem = "display_name must not contain NUL or unpaired surrogates"
            return InvalidDisplayName.code, problem
    return None


async def import_users(
    session: AsyncSession, tenant_id: uuid.UUID, entries: Sequence[ImportEntry]
) -> ImportResult:
    """Creates the valid, new users in one statement; reports each bad entry by index."""
    result = ImportResult()
    seen: set[str] = set()
    external_ids: list[str] = []
    emails: list[str | None] = []
    names: list[str | None] = []
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem is None and entry.external_id in seen:
            problem = (DuplicateEntry.code, "external_id appears earlier in this batch")
        if problem is not None:
            code, message = problem
            shown = storable_form(str(entry.external_id)[:300])
            result.failed.append(ImportFailure(index, shown, code, message))
            continue
        seen.add(entry.external_id)
        external_ids.append(entry.external_id)
        emails.append(entry.email)
        names.append(entry.display_name)
    if external_ids:
        result.created_user_ids = await repository.insert_users(
            session, tenant_id, external_ids, emails, names
        )
    result.created = len(result.created_user_ids)
    result.existing = len(external_ids) - result.created
    return result


async def get_user(session: AsyncSession, tenant_id: uuid.UUID, external_id: str) -> UserRow:
    user = await repository.get_user(session, tenant_id, external_id)
    if user is None:
        raise UserNotFound(f"User '{external_id}' not found")
    return user


def check_profile(changes: dict[str, str | None]) -> None:
    """A user's new email or display name (None clears it), by the import's rules:
    400 InvalidEmail or InvalidDisplayName."""
    problem = _entry_problem(ImportEntry("x", changes.get("email"), changes.get("display_name")))
    if problem is not None:
        code, message = problem
        raise (InvalidEmail if code == InvalidEmail.code else InvalidDisplayName)(message)


async def update_user(
    session: AsyncSession, user: UserRow, changes: dict[str, str | None]
) -> UserRow:
    """Change the user's email and display name (checked by ``check_profile``)."""
    check_profile(changes)
    updated = await repository.update_user(session, user.id, changes)
    assert updated is not None
    return updated


# -- API keys ------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: int,
    name: str,
    rate_limit_per_second: int | None,
) -> tuple[ApiKeyRow, str]:
    """(the stored key, the full key string to show once)."""
    for _ in range(5):
        new = api_keys.generate_api_key()
        row = await repository.insert_api_key(
            session,
            tenant_id=tenant_id,
            user_id=user_id,
            name=name,
            prefix=new.prefix,
            secret_hash=new.secret_hash,
            rate_limit_per_second=rate_limit_per_second,
        )
        if row is not None:
            return row, new.key
    raise Conflict("Could not allocate a unique API key prefix; try again")


async def revoke_api_key(
    session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID
) -> ApiKeyRow:
    row = await repository.revoke_api_key(session, tenant_id, key_id)
    if row is None:
        raise NotFound("API key not found")
    return row


async def authenticate_api_key(
    session: AsyncSession | AsyncConnection, raw_key: str
) -> ApiKeyCredentials:
    """The key's owner, or 401 InvalidApiKey (malformed, unknown, wrong secret or revoked).

    Read from the database on every request: a revocation is seen by the next request.
    """
    parts = api_keys.split_api_key(raw_key)
    if parts is None:
        raise InvalidApiKey("Malformed API key")
    prefix, secret = parts
    found = await repository.find_api_key_credentials(session, prefix)
    if found is None or not api_keys.secret_matches(secret, found.secret_hash):
        raise InvalidApiKey("Invalid API key")
    if found.revoked_at is not None:
        raise InvalidApiKey("API key has been revoked")
    if found.tenant_status != "active":
        raise Forbidden("This tenant is suspended")
    return found


async def note_api_key_used(
    db: Database,
    key_id: uuid.UUID,
    throttle: api_keys.LastUsedThrottle = api_keys.PROCESS_LAST_USED_THROTTLE,
) -> None:
    """Keeps last_used_at roughly current without a write per request.

    Runs in its own short transaction so that no request holds the key's row lock while
    it works (concurrent requests with one key must not queue behind each other).
    """
    if not throttle.due(key_id):
        return
    try:
        async with db.autocommit() as conn:
            await repository.touch_api_key_last_used(conn, key_id)
    except Exception:  # noqa: BLE001 - bookkeeping must never fail a paid request
        throttle.forget(key_id)
        log.warning("could not record last use of API key %s", key_id, exc_info=True)
