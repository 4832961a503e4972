"""``swapmeter admin recharge``: credit Tokens to the users of a CSV file.

Every row is checked here first (csvfile.check_recharge); the good ones go to the bulk
recharge endpoint in chunks (chunks.send) whose keys make a rerun after Ctrl-C apply
nothing twice. A file with ``expires_at``/``label`` columns is a file of grants: a bulk
recharge body carries one expiry and label for all its entries, so the rows are grouped
by (expires_at, label), in the order each pair first appears, and each group is chunked
on its own (rows with neither are plain Tokens). ``--dry-run`` sends the chunks to the
preview endpoint instead, which runs the service's own checks (unknown and frozen users)
and applies nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from admin.cli import chunks, csvfile, output
from admin.cli.client import Client, Response
from admin.cli.common import JsonOption, TenantOption, UrlOption, run, tenant_id
from admin.cli.config import resolve
from admin.cli.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, CliError


class Mode(StrEnum):
    soft = "soft"
    atomic = "atomic"


def recharge(
    tenant: TenantOption,
    csv_file: Annotated[
        Path,
        typer.Option("--csv", help="user,amount rows (header required); with --amount: user ids"),
    ],
    amount: Annotated[
        int | None,
        typer.Option(help="the same amount for every user of the file (a list of user ids)"),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="recorded on every ledger entry")] = None,
    mode: Annotated[
        Mode,
        typer.Option(
            help="soft: bad rows reported, the rest applied; atomic: per chunk, all or nothing"
        ),
    ] = Mode.soft,
    chunk_size: Annotated[
        int, typer.Option(min=1, max=chunks.MAX_CHUNK, help="rows per request")
    ] = chunks.MAX_CHUNK,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="check every row (here and on the server), apply nothing"),
    ] = False,
    parallel: Annotated[int, typer.Option(min=1, max=4, help="chunks in flight at once")] = 1,
    run_name: Annotated[
        str | None,
        typer.Option(help="send the same file again as a new recharge (a new set of keys)"),
    ] = None,
    url: UrlOption = None,
    json_out: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Credit Tokens to the users of a CSV file, in chunks of at most 10,000 rows.

    Interrupted (Ctrl-C, a lost connection), run the same command again: chunks already
    applied are answered from the service's record and applied nothing twice.
    """
    run(
        lambda: _recharge(
            tenant_id(tenant),
            csv_file,
            amount,
            reason,
            mode.value,
            chunk_size,
            dry_run,
            parallel,
            run_name,
            url,
            json_out,
            quiet,
        )  # fmt: skip
    )


@dataclass
class _Tally:
    """What the chunks' reports said, added up as they come back."""

    applied: int = 0
    tokens: int = 0
    pending: int = 0
    replayed: int = 0
    sent: int = 0
    pending_batches: list[str] = field(default_factory=list)
    rejected_batches: list[str] = field(default_factory=list)
    interrupted: bool = False
    stopped: CliError | None = None

    def add(self, report: dict[str, Any], replayed: bool) -> None:
        self.sent += 1
        self.replayed += replayed
        status = report.get("status")
        if status in ("applied", "preview"):
            self.applied += int(report.get("succeeded", 0))
            self.tokens += int(report.get("total_amount", 0))
        elif status == "pending_approval":
            self.pending += int(report.get("succeeded", 0))
            self.pending_batches.append(str(report.get("batch_id")))
        elif status == "rejected":
            self.rejected_batches.append(str(report.get("batch_id")))


def _recharge(
    tenant: str,
    path: Path,
    amount: int | None,
    reason: str | None,
    mode: str,
    chunk_size: int,
    dry_run: bool,
    parallel: int,
    run_name: str | None,
    url: str | None,
    json_out: bool,
    quiet: bool,
) -> int:
    started = time.monotonic()
    if amount is not None and amount < 1:
        raise CliError("--amount must be at least 1", EXIT_USAGE)
    target = resolve(url)
    source = csvfile.read(path)
    rows = csvfile.check_recharge(source, amount)
    header = source.header or []
    rejected = list(rows.rejected)
    _refuse_before_sending(path, header, rejected, mode, dry_run, json_out)

    # Not the amount: a rerun with another --amount must hit 409, not credit the landed
    # chunks again under new keys.
    base = chunks.key_base(source.sha256, run_name)
    plan = chunks.split_groups(csvfile.group_by_grant(rows), chunk_size)
    path_api = f"/admin/tenants/{tenant}/recharges/bulk" + ("/preview" if dry_run else "")

    def request(client: Client, chunk: chunks.Chunk) -> Response:
        body = _chunk_body(rows, chunk, amount, mode, reason)
        key = None if dry_run else f"{base}-{chunk.number}"
        return client.call("POST", path_api, body=body, key=key)

    tally = _Tally()
    with Client(target.url, target.token) as client, output.progress(quiet) as bar:
        task = bar.add_task("dry run" if dry_run else "recharge", total=len(rows.users))
        try:
            for chunk, response in chunks.send(client, plan, request, parallel=parallel):
                tally.add(response.data, response.replayed)
                for failure in response.data.get("failed_users") or []:
                    index = failure.get("index")
                    at = chunk.start + index if isinstance(index, int) else None
                    rejected.append(_server_failure(rows, header, at, failure))
                bar.advance(task, chunk.end - chunk.start)
        except KeyboardInterrupt:
            tally.interrupted = True
        except CliError as exc:  # the summary of what landed first, then the error
            tally.stopped = exc

    summary = output.file_run_summary(
        path,
        tenant,
        rows.data_rows,
        header,
        rejected,
        time.monotonic() - started,
        dry_run=dry_run,
        mode=mode,
        **_tally_json(tally, dry_run, len(plan)),
    )
    output.report(summary, rejected, header.index("user"), json_out, _print_summary)
    return _exit_code(tally, bool(rejected))


def _refuse_before_sending(
    path: Path,
    header: list[str],
    rejected: list[csvfile.Rejected],
    mode: str,
    dry_run: bool,
    json_out: bool,
) -> None:
    """What stops a real run before any chunk is sent: rows that failed the checks in
    atomic mode."""
    if mode == "atomic" and rejected and not dry_run:
        written = csvfile.write_failed(path, header, rejected)
        if not json_out:
            output.show_failures(rejected, header.index("user"), str(written))
        raise CliError(
            f"atomic mode: {len(rejected)} rows failed the checks, nothing was sent",
            EXIT_INCOMPLETE,
        )


def _exit_code(tally: _Tally, rows_failed: bool) -> int:
    """Once the summary is out: an interruption or error goes on up; otherwise 0 when all
    applied, EXIT_INCOMPLETE when rows failed or chunks wait for approval or were refused."""
    if tally.interrupted:
        raise KeyboardInterrupt
    if tally.stopped is not None:
        raise tally.stopped
    if rows_failed or tally.pending_batches or tally.rejected_batches:
        return EXIT_INCOMPLETE
    return EXIT_OK


def _chunk_body(
    rows: csvfile.Checked, chunk: chunks.Chunk, amount: int | None, mode: str, reason: str | None
) -> dict[str, Any]:
    """One chunk as a bulk recharge body: one amount for all, or each row's own; a chunk of
    grants adds their expires_at and label."""
    users = rows.users[chunk.start : chunk.end]
    body: dict[str, Any]
    if amount is not None:
        body = {"users": users, "amount": amount}
    else:
        amounts = rows.amounts[chunk.start : chunk.end]
        body = {"entries": [{"user": u, "amount": a} for u, a in zip(users, amounts, strict=True)]}
    body.update(chunk.grant)
    body["mode"] = mode
    if reason is not None:
        body["reason"] = reason
    return body


def _tally_json(tally: _Tally, dry_run: bool, chunk_count: int) -> dict[str, Any]:
    return {
        "applied": 0 if dry_run else tally.applied,
        "would_apply": tally.applied if dry_run else None,
        "pending_approval": tally.pending,
        "tokens": tally.tokens,
        "chunks": chunk_count,
        "chunks_sent": tally.sent,
        "chunks_replayed": tally.replayed,
        "pending_batches": tally.pending_batches,
        "rejected_batches": tally.rejected_batches,
        "interrupted": tally.interrupted,
    }


def _server_failure(
    rows: csvfile.Checked, header: list[str], at: int | None, failure: dict[str, Any]
) -> csvfile.Rejected:
    """A row the service refused, with its line and the columns it was read from."""
    if at is None or not 0 <= at < len(rows.users):
        user = str(failure.get("user"))
        return csvfile.Rejected(0, [user], str(failure.get("code")), str(failure.get("message")))
    values = {"user": rows.users[at], "amount": str(rows.amounts[at])}
    if rows.extra:
        values.update(rows.extra[at])
    return csvfile.Rejected(
        rows.lines[at],
        [values.get(column, "") for column in header],
        str(failure.get("code")),
        str(failure.get("message")),
    )


def _print_summary(s: dict[str, Any]) -> None:
    verb = "would apply" if s["dry_run"] else "applied"
    count = s["would_apply"] if s["dry_run"] else s["applied"]
    parts = [
        f"{s['rows']:,} rows",
        f"{count:,} {verb}",
        f"{s['failed']:,} failed",
    ]
    if s["pending_approval"]:
        parts.append(
            f"{s['pending_approval']:,} pending approval ({', '.join(s['pending_batches'])})"
        )
    if s["rejected_batches"]:
        parts.append(f"{len(s['rejected_batches'])} chunks rejected (atomic)")
    if s["chunks_replayed"]:
        parts.append(f"{s['chunks_replayed']} of {s['chunks']} chunks already applied earlier")
    parts += [
        f"{s['tokens']:,} Tokens",
        f"{s['seconds']:.1f} s",
        f"{s['rows_per_second'] or 0:,} rows/s",
    ]
    output.line(("dry run: " if s["dry_run"] else "recharge: ") + ", ".join(parts))
    if s["interrupted"] or s["chunks_sent"] < s["chunks"]:
        output.line(
            f"stopped after {s['chunks_sent']} of {s['chunks']} chunks: run the same command "
            "again to finish (chunks already applied are not applied twice)"
        )
