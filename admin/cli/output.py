"""How the CLI talks back: the progress bar, failed-row lines and summaries (plain or
``--json``). Progress and messages go to stderr; stdout carries only the result, so that
``--json`` output can be piped."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from admin.cli.csvfile import Rejected, write_failed

err = Console(stderr=True, highlight=False, soft_wrap=True)  # one error, one line
SHOWN_FAILURES = 20


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} rows/s", style="progress.data.speed")


def progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def line(text: str) -> None:
    """One plain line on stdout (rich markup off: user ids may hold brackets)."""
    print(text, flush=True)


def show_failures(rejected: list[Rejected], user_column: int, failed_csv: str | None) -> None:
    for r in sorted(rejected, key=lambda r: r.line)[:SHOWN_FAILURES]:
        user = r.values[user_column] if 0 <= user_column < len(r.values) else ""
        err.print(
            f"line {r.line}: {r.code}: {r.message}" + (f" (user {user})" if user else ""),
            markup=False,
        )
    if len(rejected) > SHOWN_FAILURES:
        err.print(f"... and {len(rejected) - SHOWN_FAILURES} more", markup=False)
    if failed_csv:
        err.print(f"failed rows written to {failed_csv}", markup=False)


def failures_json(rejected: list[Rejected], header: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "line": r.line,
            **dict(zip(header, r.values, strict=False)),
            "code": r.code,
            "message": r.message,
        }
        for r in sorted(rejected, key=lambda r: r.line)
    ]


def file_run_summary(
    path: Path,
    tenant: str,
    data_rows: int,
    header: list[str],
    rejected: list[Rejected],
    seconds: float,
    **counts: Any,
) -> dict[str, Any]:
    """The summary of a file sent in chunks (recharge, users import): the file, the
    command's own ``counts``, the failed rows (also written beside the file) and the pace."""
    failed_csv = write_failed(path, header, rejected) if rejected else None
    return {
        "file": str(path),
        "tenant": tenant,
        "rows": data_rows,
        **counts,
        "failed": len(rejected),
        "seconds": round(seconds, 3),
        "rows_per_second": round(data_rows / seconds) if seconds > 0 else None,
        "failed_csv": str(failed_csv) if failed_csv else None,
        "failures": failures_json(rejected, header),
    }


def report(
    summary: dict[str, Any],
    rejected: list[Rejected],
    id_column: int,
    json_out: bool,
    say: Callable[[dict[str, Any]], None],
) -> None:
    """The summary as JSON, or the failed rows and ``say``'s line for a person."""
    if json_out:
        emit_json(summary)
    else:
        show_failures(rejected, id_column, summary["failed_csv"])
        say(summary)
