"""``swapmeter admin usage`` and ``swapmeter admin ledger export``: a tenant's daily usage
(a table, CSV or JSON) and its ledger entries streamed to a CSV file."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TaskID

from admin.cli import output
from admin.cli.client import Client
from admin.cli.common import JsonOption, TenantOption, UrlOption, run, tenant_id
from admin.cli.config import resolve
from admin.cli.errors import EXIT_OK, EXIT_USAGE, CliError

FromOption = Annotated[str, typer.Option("--from", help="first UTC day, YYYY-MM-DD")]
ToOption = Annotated[str, typer.Option("--to", help="last UTC day (included), YYYY-MM-DD")]

# The usage table's columns for a person; --csv and --json carry every field.
SHOWN = (
    ("day", "day"),
    ("recharged", "recharged"),
    ("granted", "granted"),
    ("consumed", "consumed"),
    ("released", "released"),
    ("refunded", "refunded"),
    ("expired", "expired"),
    ("adjusted", "adjusted"),
    ("images ok/failed", "images"),
    ("videos ok/failed", "videos"),
    ("video s", "video_seconds"),
    ("active", "active_users"),
)

ledger = typer.Typer(help="The Token ledger of a tenant.", no_args_is_help=True)


def _day(value: str, option: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise CliError(f"{option} must be a day as YYYY-MM-DD, got '{value}'", EXIT_USAGE) from None


def _range(first: str, last: str) -> dict[str, str]:
    return {"from": _day(first, "--from"), "to": _day(last, "--to")}


def usage(
    tenant: TenantOption,
    first: FromOption,
    last: ToOption,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="write the report to this CSV file")
    ] = None,
    url: UrlOption = None,
    json_out: JsonOption = False,
) -> None:
    """A tenant's usage per UTC day: Tokens by kind, jobs, video seconds, active users."""
    run(lambda: _usage(tenant_id(tenant), _range(first, last), csv_file, url, json_out))


def _usage(
    tenant: str, days: dict[str, str], csv_file: Path | None, url: str | None, json_out: bool
) -> int:
    target = resolve(url)
    path = f"/admin/tenants/{tenant}/usage"
    with Client(target.url, target.token) as client:
        if csv_file is not None:
            csv_file.write_text(client.text(path, params=days, accept="text/csv"))
            output.err.print(f"usage written to {csv_file}", markup=False)
            return EXIT_OK
        items: list[dict[str, Any]] = client.call("GET", path, params=days).data["items"]
    if json_out:
        output.emit_json({"tenant": tenant, **days, "items": items})
        return EXIT_OK
    rows = [[str(_cell(item, key)) for _, key in SHOWN] for item in items]
    rows.append(["total", *(str(_total(items, key)) for _, key in SHOWN[1:])])
    widths = [max(len(title), *(len(r[n]) for r in rows)) for n, (title, _) in enumerate(SHOWN)]
    output.line("  ".join(title.rjust(w) for (title, _), w in zip(SHOWN, widths, strict=True)))
    for r in rows:
        output.line("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)))
    return EXIT_OK


def _cell(item: dict[str, Any], key: str) -> Any:
    if key in ("images", "videos"):
        return f"{item[f'{key}_succeeded']}/{item[f'{key}_failed']}"
    return item[key]


def _total(items: list[dict[str, Any]], key: str) -> Any:
    if key in ("images", "videos"):
        ok = sum(i[f"{key}_succeeded"] for i in items)
        return f"{ok}/{sum(i[f'{key}_failed'] for i in items)}"
    if key == "active_users":
        return "-"  # the same user on two days is one user: no sum of days says how many
    total = sum(i[key] for i in items)
    return round(total, 3) if isinstance(total, float) else total


@ledger.command("export")
def export(
    tenant: TenantOption,
    first: FromOption,
    last: ToOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="the CSV file to write")],
    url: UrlOption = None,
    json_out: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress line")] = False,
) -> None:
    """Every ledger entry of a tenant in those UTC days, streamed to a CSV file."""
    run(lambda: _export(tenant_id(tenant), _range(first, last), out, url, json_out, quiet))


def _export(
    tenant: str, days: dict[str, str], out: Path, url: str | None, json_out: bool, quiet: bool
) -> int:
    target = resolve(url)
    started = time.monotonic()
    lines = 0
    bar = output.progress(quiet)
    task: TaskID | None = None

    def advance(piece: bytes) -> None:
        # Shown from the first piece on: a refused export is its one error line alone.
        nonlocal lines, task
        if task is None:
            bar.start()
            task = bar.add_task("export", total=None)
        lines += piece.count(b"\n")
        bar.update(task, completed=max(lines - 1, 0))

    with Client(target.url, target.token) as client:
        try:
            written = client.download(
                f"/admin/tenants/{tenant}/ledger/export", params=days, out=out, progress=advance
            )
        finally:
            if task is not None:
                bar.stop()
    seconds = time.monotonic() - started
    rows = max(lines - 1, 0)  # the header line is no entry
    summary = {
        "file": str(out),
        "tenant": tenant,
        **days,
        "rows": rows,
        "bytes": written,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds) if seconds > 0 else None,
    }
    if json_out:
        output.emit_json(summary)
    else:
        output.line(
            f"ledger export: {rows:,} entries to {out}, {written:,} bytes, {seconds:.1f} s, "
            f"{summary['rows_per_second'] or 0:,} rows/s"
        )
    return EXIT_OK
