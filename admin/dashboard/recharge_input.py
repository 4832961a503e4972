"""The bulk recharge page's input: a CSV upload (``user,amount[,expires_at,label]``, read by
the CLI's own reader, ``admin.cli.csvfile``) or pasted ids with one amount, made into the
Admin API's bulk request (``billing.bulk_entries.parse_bulk_request``: the same envelope
rules), and kept in Redis between the preview and the submit.

Every data row becomes one entry, in file order: a row the reader refused (wrong amount,
bad date, a user seen earlier...) is an entry the service reports as failed with the
reader's code and message (``BulkRequest.refused``), so the batch's report lists every
row of the file. One upload is one batch, so one expiry and one campaign label: those of
the form, else of the first good row that names them; a row naming others is refused.

The stash (``Stash``) holds what the submit needs for an hour, under a random token,
bound to the admin who made the preview; its digest is the submit's fingerprint, so a
double submit (or a reloaded preview, which carries the same Idempotency-Key) applies once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from admin.cli import csvfile
from admin.cli.errors import CliError
from app.core.errors import BadRequest, InvalidAmount, InvalidTime, NotFound
from billing.bulk_entries import BulkRequest, parse_bulk_request

STASH_SECONDS = 3600
_STASH_PREFIX = "swapmeter:dashboard:recharge-preview:"
_PASTE_SPLIT = re.compile(r"[\s,;]+")
MAX_UPLOAD_BYTES = 8 * 1024 * 1024


@dataclass
class Upload:
    """The entries of one upload, in row order, and the batch's envelope."""

    users: list[Any] = field(default_factory=list)
    amounts: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the file line of each entry
    refused: dict[int, tuple[str, str]] = field(default_factory=dict)
    expires_at: str | None = None
    label: str | None = None
    reason: str | None = None

    def payload(self) -> dict[str, Any]:
        """The Admin API's body of this batch (soft; the submit picks the mode)."""
        body: dict[str, Any] = {
            "entries": [
                {"user": u, "amount": a} for u, a in zip(self.users, self.amounts, strict=True)
            ]
        }
        for name in ("expires_at", "label", "reason"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        return body

    def request(self, *, max_entries: int, max_amount: int, mode: str = "soft") -> BulkRequest:
        """The service's request (400s of the envelope as the API answers them)."""
        body = {**self.payload(), "mode": mode}
        if not self.users:
            raise BadRequest("There are no rows to recharge")
        bulk = parse_bulk_request(body, max_entries=max_entries, max_amount=max_amount)
        return replace(bulk, refused=dict(self.refused))


def form_expiry(value: str) -> str | None:
    """The form's expiry: RFC 3339, or a ``datetime-local`` value taken as UTC."""
    value = value.strip()
    if not value:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?", value):
        value += ("" if value.count(":") == 2 else ":00") + "Z"
    return value


def _source(data: bytes, name: str) -> csvfile.Source:
    """csvfile.read's reading, from bytes (an upload) instead of a path."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The file is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise BadRequest(f"Bad CSV line {reader.line_num}: {exc}") from None
    return csvfile.Source(Path(name), hashlib.sha256(data).hexdigest(), rows, None)


def read_csv(data: bytes, name: str, *, expires_at: str | None, label: str | None) -> Upload:
    source = _source(data, name or "upload.csv")
    try:
        checked = csvfile.check_recharge(source, None)
    except CliError as exc:
        raise BadRequest(str(exc)) from None
    return _upload(source, checked, expires_at=expires_at, label=label)


def read_pasted(text: str, amount: str, *, expires_at: str | None, label: str | None) -> Upload:
    amount = amount.strip().replace(",", "")
    if not amount.isascii() or not amount.isdecimal() or int(amount) < 1:
        raise InvalidAmount("amount: a whole number of Tokens, 1 or more")
    ids = [i for i in _PASTE_SPLIT.split(text) if i]
    if not ids:
        raise BadRequest("Paste at least one external id")
    rows = [(n, [i]) for n, i in enumerate(ids, start=1)]
    source = csvfile.Source(Path("pasted"), "", rows, None)
    checked = csvfile.check_recharge(source, int(amount))
    return _upload(source, checked, expires_at=expires_at, label=label)


def _upload(
    source: csvfile.Source,
    checked: csvfile.Checked,
    *,
    expires_at: str | None,
    label: str | None,
) -> Upload:
    header = source.header or ["user"]
    at_user = header.index("user")
    rows: list[tuple[int, Any, Any, tuple[str, str] | None, dict[str, str]]] = []
    for n, line in enumerate(checked.lines):
        extra = checked.extra[n] if checked.extra else {}
        rows.append((line, checked.users[n], checked.amounts[n], None, extra))
    for r in checked.rejected:
        user = r.values[at_user].strip() if at_user < len(r.values) else ""
        rows.append((r.line, user, None, (r.code, r.message), {}))
    rows.sort(key=lambda row: row[0])
    if expires_at is None and label is None:
        named = next((extra for *_, extra in rows if extra), {})
        expires_at, label = named.get("expires_at"), named.get("label")
    upload = Upload(expires_at=expires_at, label=label)
    for index, (line, user, amount, problem, extra) in enumerate(rows):
        if (
            problem is None
            and extra
            and (extra.get("expires_at") != expires_at or extra.get("label") != label)
        ):
            problem = (
                "InvalidGrant",
                "One upload is one batch, with one expires_at and label: this row names others",
            )
        upload.users.append(user)
        upload.amounts.append(amount if problem is None else None)
        upload.lines.append(line)
        if problem is not None:
            upload.refused[index] = problem
    return upload


def check_expiry(value: str | None) -> None:
    """A clear message for the form's own date before the service's rules."""
    if value is None:
        return
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidTime("expires_at: a date and time, e.g. 2030-01-31T12:00Z") from None
    if parsed.tzinfo is not None and parsed <= datetime.now(UTC):
        raise InvalidTime("expires_at is in the past: grants must expire in the future")


# -- the stash between preview and submit ---------------------------------------------------


@dataclass(frozen=True)
class Stash:
    token: str
    digest: str


def _slot(token: str) -> str:
    return _STASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


async def stash(redis: Redis, admin_id: uuid.UUID, tenant_id: uuid.UUID, upload: Upload) -> Stash:
    record = {
        "admin": str(admin_id),
        "tenant": str(tenant_id),
        "payload": upload.payload(),
        "refused": [[i, *problem] for i, problem in sorted(upload.refused.items())],
        "lines": upload.lines,
    }
    raw = orjson.dumps(record)
    token = secrets.token_urlsafe(24)
    await redis.set(_slot(token), raw, ex=STASH_SECONDS)
    digest = hashlib.sha256(orjson.dumps(record["payload"], option=orjson.OPT_SORT_KEYS))
    digest.update(orjson.dumps(record["refused"]))
    return Stash(token, digest.hexdigest())


async def unstash(redis: Redis, token: str, admin_id: uuid.UUID, tenant_id: uuid.UUID) -> Upload:
    """The upload a preview stashed (this admin's, for this tenant); NotFound once it
    expired or for anyone else."""
    raw = await redis.get(_slot(token)) if token else None
    record = orjson.loads(raw) if raw else None
    if record is None or record["admin"] != str(admin_id) or record["tenant"] != str(tenant_id):
        raise NotFound("This preview has expired: upload the file again")
    payload = record["payload"]
    entries = payload["entries"]
    return Upload(
        users=[e["user"] for e in entries],
        amounts=[e["amount"] for e in entries],
        lines=record["lines"],
        refused={i: (code, message) for i, code, message in record["refused"]},
        expires_at=payload.get("expires_at"),
        label=payload.get("label"),
        reason=payload.get("reason"),
    )
