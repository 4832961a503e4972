"""``swapmeter admin``: the operator CLI, a client of a running service's admin API.

One module per command group (auth, recharge, users, verify, reports), the HTTP client (client),
the token and URL store (config), the input files (csvfile) and what is printed (output).
A new command is a function registered in ``build_app``.
"""

from __future__ import annotations

import logging

import typer

from admin.cli import auth, recharge, reports, users, verify


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="swapmeter admin",
        help="Operate a running SwapMeter over HTTP (docs/cli.md).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.command()(auth.login)
    app.command()(auth.logout)
    app.command()(recharge.recharge)
    app.add_typer(users.app, name="users")
    app.command()(verify.verify)
    app.command()(reports.usage)
    app.add_typer(reports.ledger, name="ledger")
    return app


def main(argv: list[str]) -> int:
    """Run ``swapmeter admin ARGV``; returns the exit code."""
    # The service's log set-up shows every httpx request at INFO: noise between the
    # progress bar and the summary here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        build_app()(args=argv, prog_name="swapmeter admin")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
