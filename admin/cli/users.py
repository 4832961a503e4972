"""``swapmeter admin users import``: create a tenant's end users from a CSV file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from admin.cli import chunks, csvfile, output
from admin.cli.client import Client, Response
from admin.cli.common import JsonOption, TenantOption, UrlOption, run, tenant_id
from admin.cli.config import resolve
from admin.cli.errors import EXIT_INCOMPLETE, EXIT_OK, CliError

app = typer.Typer(help="End users of a tenant.", no_args_is_help=True)


@app.command("import")
def import_(
    tenant: TenantOption,
    csv_file: Annotated[
        Path,
        typer.Option("--csv", help="external_id[,email,display_name,plan] rows, header required"),
    ],
    chunk_size: Annotated[
        int, typer.Option(min=1, max=chunks.MAX_CHUNK, help="rows per request")
    ] = chunks.MAX_CHUNK,
    url: UrlOption = None,
    json_out: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Create the users of a CSV file (existing ones are counted, not changed, except
    that a row's plan puts its user on that plan)."""
    run(lambda: _import(tenant_id(tenant), csv_file, chunk_size, url, json_out, quiet))


def _import(
    tenant: str, path: Path, chunk_size: int, url: str | None, json_out: bool, quiet: bool
) -> int:
    started = time.monotonic()
    target = resolve(url)
    source = csvfile.read(path)
    rows = csvfile.check_import(source)
    header = source.header or []
    rejected = list(rows.rejected)
    plan = chunks.split(len(rows.users), chunk_size)

    def request(client: Client, chunk: chunks.Chunk) -> Response:
        body = {"users": rows.users[chunk.start : chunk.end]}
        key = f"{source.sha256}-{chunk.number}"
        return client.call("POST", f"/admin/tenants/{tenant}/users/import", body=body, key=key)

    created = existing = sent = 0
    stopped: BaseException | None = None
    with Client(target.url, target.token) as client, output.progress(quiet) as bar:
        task = bar.add_task("import", total=len(rows.users))
        try:
            for chunk, response in chunks.send(client, plan, request, parallel=1):
                sent += 1
                created += int(response.data.get("created", 0))
                existing += int(response.data.get("existing", 0))
                for failure in response.data.get("failed") or []:
                    rejected.append(_server_failure(rows, header, chunk.start, failure))
                bar.advance(task, chunk.end - chunk.start)
        except (KeyboardInterrupt, CliError) as exc:
            stopped = exc

    summary = output.file_run_summary(
        path,
        tenant,
        rows.data_rows,
        header,
        rejected,
        time.monotonic() - started,
        created=created,
        existing=existing,
        chunks=len(plan),
        chunks_sent=sent,
    )
    output.report(summary, rejected, header.index("external_id"), json_out, _print_summary)
    if stopped is not None:
        raise stopped
    return EXIT_INCOMPLETE if rejected else EXIT_OK


def _server_failure(
    rows: csvfile.ImportRows, header: list[str], start: int, failure: dict[str, Any]
) -> csvfile.Rejected:
    index = failure.get("index")
    code, message = str(failure.get("code")), str(failure.get("message"))
    if not isinstance(index, int) or not 0 <= start + index < len(rows.users):
        return csvfile.Rejected(0, [str(failure.get("external_id"))], code, message)
    record = rows.users[start + index]
    return csvfile.Rejected(
        rows.lines[start + index], [record.get(c, "") for c in header], code, message
    )


def _print_summary(s: dict[str, Any]) -> None:
    output.line(
        f"users import: {s['rows']:,} rows, {s['created']:,} created, {s['existing']:,} "
        f"existing, {s['failed']:,} failed, {s['seconds']:.1f} s, "
        f"{s['rows_per_second'] or 0:,} rows/s"
    )
