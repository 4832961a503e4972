"""Options and helpers every command shares: ``--url``, ``--json``, the tenant id, and
running a command body so that a CliError ends it with one line and its exit code."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from admin.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError
from admin.cli.output import err

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="the service, e.g. http://127.0.0.1:8000 (default: SWAPMETER_URL, else the login's)",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the result as JSON (for scripts)")]
TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="the tenant's id")]

T = TypeVar("T")


def tenant_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CliError(
            f"--tenant must be a tenant id (a UUID), got '{value}'", EXIT_USAGE
        ) from None


def run(body: Callable[[], int]) -> None:
    """Run a command; its return value is the exit code. A CliError prints its one line."""
    try:
        code = body()
    except CliError as exc:
        err.print(f"swapmeter admin: {exc.message}", markup=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("swapmeter admin: interrupted", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(code)
