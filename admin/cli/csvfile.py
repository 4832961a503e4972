"""Reading the CLI's input files: header checks, per-row checks with line numbers, and the
failed-rows CSV written beside the input.

A file that cannot be used at all (unreadable, wrong header) is a CliError; a bad row is a
``Rejected`` with its 1-based line number and a code named like the service's
(``InvalidEntry``, ``InvalidAmount``, ``DuplicateEntry``, ...), so that local and server
failures read alike.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from admin.cli.errors import EXIT_USAGE, CliError

MAX_USER = 255  # the service's limit on an external id
MAX_LABEL = 100
RECHARGE_COLUMNS = ("user", "amount", "expires_at", "label")
GRANT_COLUMNS = ("expires_at", "label")
IMPORT_COLUMNS = ("external_id", "email", "display_name", "plan")


@dataclass
class Rejected:
    line: int
    values: list[str]  # the row's fields, in the header's column order
    code: str
    message: str


@dataclass
class Source:
    """A file's bytes, its digest (the recharge's idempotency key base) and its rows."""

    path: Path
    sha256: str
    rows: list[tuple[int, list[str]]]  # (line, fields) of every non-blank data row
    header: list[str] | None


def read(path: Path) -> Source:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (byte {exc.start})", EXIT_USAGE) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise CliError(f"bad CSV line {reader.line_num}: {exc}", EXIT_USAGE) from None
    return Source(path, hashlib.sha256(data).hexdigest(), rows, None)


def header_of(source: Source, allowed: tuple[str, ...], required: tuple[str, ...]) -> list[str]:
    """The header's column names (lower case); CliError naming line 1's problem."""
    if not source.rows:
        raise CliError(f"{source.path} has no rows", EXIT_USAGE)
    line, fields = source.rows[0]
    names = [f.strip().lower() for f in fields]
    expected = ",".join(required) + "".join(f"[,{c}]" for c in allowed if c not in required)
    unknown = [n for n in names if n not in allowed]
    missing = [c for c in required if c not in names]
    if unknown or missing:
        what = f"unknown column '{unknown[0]}'" if unknown else f"no '{missing[0]}' column"
        raise CliError(f"bad CSV line {line}: {what}; the header must be {expected}", EXIT_USAGE)
    if len(set(names)) != len(names):
        raise CliError(f"bad CSV line {line}: a column appears twice in the header", EXIT_USAGE)
    source.header = names
    return names


@dataclass
class Checked:
    """Rows that passed the local checks (as parallel lists) and those that did not."""

    users: list[str] = field(default_factory=list)
    amounts: list[int] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    # Per good row, only when the file has grant columns: its expires_at and label.
    extra: list[dict[str, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    data_rows: int = 0


def check_recharge(source: Source, amount: int | None) -> Checked:
    """``user,amount[,expires_at,label]`` rows, or with ``amount`` a list of users (one per
    line, or a ``user`` column). Rules in the service's order: a user (non-empty, at most
    255 characters), not seen earlier in the file, then the amount (an integer >= 1), the
    date (RFC 3339 with a time zone) and the label (at most 100 characters)."""
    columns, rows = _recharge_columns(source, amount)
    checked = Checked(data_rows=len(rows))
    rules = _RowRules(columns, amount)
    seen: dict[str, int] = {}
    for line, fields in rows:
        try:
            user, value, extra = rules.parse(line, fields, seen)
        except _Refused as refused:
            checked.rejected.append(Rejected(line, fields, *refused.args))
            continue
        checked.users.append(user)
        checked.amounts.append(value)
        checked.lines.append(line)
        if rules.has_grant_columns:
            checked.extra.append(extra)
    return checked


def group_by_grant(checked: Checked) -> list[tuple[int, int, dict[str, str]]]:
    """Reorder the good rows so that rows of the same (expires_at, label) follow each other,
    groups in the order they first appear and rows in file order within a group; returns
    each group's ``(start, end, grant fields)``. A file without grant columns is one group."""
    if not checked.extra:
        return [(0, len(checked.users), {})]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, extra in enumerate(checked.extra):
        groups.setdefault((extra.get("expires_at", ""), extra.get("label", "")), []).append(i)
    order = [i for members in groups.values() for i in members]
    checked.users = [checked.users[i] for i in order]
    checked.amounts = [checked.amounts[i] for i in order]
    checked.lines = [checked.lines[i] for i in order]
    checked.extra = [checked.extra[i] for i in order]
    bounds, start = [], 0
    for members in groups.values():
        bounds.append((start, start + len(members), checked.extra[start]))
        start += len(members)
    return bounds


def _recharge_columns(
    source: Source, amount: int | None
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The columns and data rows: with ``amount`` the file may be a bare list of ids."""
    if amount is None:
        return header_of(source, RECHARGE_COLUMNS, ("user", "amount")), source.rows[1:]
    first = [f.strip().lower() for f in source.rows[0][1]] if source.rows else []
    if "user" in first:
        return header_of(source, ("user",), ("user",)), source.rows[1:]
    source.header = ["user"]  # a bare list of ids: every line is a user
    return ["user"], source.rows


class _Refused(Exception):
    """A row that fails a check: args (code, message)."""


class _RowRules:
    """The checks of one recharge row, in the service's order (see check_recharge)."""

    def __init__(self, columns: list[str], amount: int | None) -> None:
        self.width = len(columns)
        self.amount = amount
        self.at_user = columns.index("user")
        self.at_amount = columns.index("amount") if amount is None else -1
        self.at_date = columns.index("expires_at") if "expires_at" in columns else -1
        self.at_label = columns.index("label") if "label" in columns else -1
        self.has_grant_columns = self.at_date >= 0 or self.at_label >= 0

    def parse(
        self, line: int, fields: list[str], seen: dict[str, int]
    ) -> tuple[str, int, dict[str, str]]:
        """(user, amount, grant fields) of a good row; _Refused(code, message) otherwise.
        A user's first row counts, good or not: a later one is a DuplicateEntry."""
        if len(fields) != self.width:
            raise _Refused("InvalidRow", f"{len(fields)} fields, the header has {self.width}")
        user = fields[self.at_user].strip()
        if not user or len(user) > MAX_USER:
            raise _Refused("InvalidEntry", f"the user must be 1 to {MAX_USER} characters")
        earlier = seen.get(user)
        if earlier is not None:
            raise _Refused("DuplicateEntry", f"user {user} already on line {earlier}")
        seen[user] = line
        return user, self._amount(fields), self._grant(fields)

    def _amount(self, fields: list[str]) -> int:
        if self.amount is None:
            text = fields[self.at_amount].strip()
            if not text.isdecimal() or not text.isascii():
                what = "not an integer" if not text.lstrip("-").isdecimal() else "not positive"
                raise _Refused("InvalidAmount", f"amount '{text}' is {what}")
            if int(text) < 1:
                raise _Refused("InvalidAmount", f"amount '{text}' is not positive")
            return int(text)
        return self.amount

    def _grant(self, fields: list[str]) -> dict[str, str]:
        """The row's expires_at (sent as written, with an upper-case Z) and label; a label
        alone is refused, as the service refuses a campaign without an expiry."""
        extra: dict[str, str] = {}
        if self.at_date >= 0 and (stamp := fields[self.at_date].strip()):
            parsed = _rfc3339(stamp)
            if parsed is None:
                raise _Refused(
                    "InvalidDate",
                    f"expires_at '{stamp}' is not an RFC 3339 date-time with a time zone",
                )
            if parsed <= datetime.now(UTC):
                raise _Refused("InvalidDate", f"expires_at '{stamp}' is in the past")
            extra["expires_at"] = stamp.replace("z", "Z")
        if self.at_label >= 0 and (label := fields[self.at_label].strip()):
            if len(label) > MAX_LABEL:
                raise _Refused("InvalidLabel", f"the label is over {MAX_LABEL} characters")
            if "expires_at" not in extra:
                raise _Refused("InvalidLabel", "a label names grants: the row needs expires_at")
            extra["label"] = label
        return extra


def _rfc3339(stamp: str) -> datetime | None:
    if len(stamp) < 20 or stamp[10] not in "Tt ":
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("z", "Z"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass
class ImportRows:
    users: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    data_rows: int = 0


def check_import(source: Source) -> ImportRows:
    """``external_id[,email,display_name,plan]`` rows: an id of 1 to 255 characters, once per
    file (the service checks the email, name and plan and reports its own failures)."""
    columns = header_of(source, IMPORT_COLUMNS, ("external_id",))
    rows = source.rows[1:]
    out = ImportRows(data_rows=len(rows))
    width = len(columns)
    seen: dict[str, int] = {}
    for line, fields in rows:
        if len(fields) != width:
            out.rejected.append(
                Rejected(
                    line, fields, "InvalidRow", f"{len(fields)} fields, the header has {width}"
                )
            )
            continue
        record = {
            name: value.strip()
            for name, value in zip(columns, fields, strict=True)
            if value.strip()
        }
        external_id = record.get("external_id", "")
        if not external_id or len(external_id) > MAX_USER:
            out.rejected.append(
                Rejected(
                    line,
                    fields,
                    "InvalidEntry",
                    f"the external_id must be 1 to {MAX_USER} characters",
                )
            )
            continue
        if external_id in seen:
            out.rejected.append(
                Rejected(
                    line,
                    fields,
                    "DuplicateEntry",
                    f"external_id {external_id} already on line {seen[external_id]}",
                )
            )
            continue
        seen[external_id] = line
        out.users.append(record)
        out.lines.append(line)
    return out


def failed_path(path: Path) -> Path:
    return path.with_name(path.name + ".failed.csv")


def write_failed(path: Path, header: list[str], rejected: list[Rejected]) -> Path:
    """``FILE.failed.csv``: the failed rows' own columns plus line, code and message, in
    line order."""
    target = failed_path(path)
    with target.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*header, "line", "code", "message"])
        for r in sorted(rejected, key=lambda r: r.line):
            values = (r.values + [""] * len(header))[: len(header)]
            writer.writerow([*values, r.line, r.code, r.message])
    return target
