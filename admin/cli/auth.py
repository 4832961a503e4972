"""``swapmeter admin login`` and ``logout``: the admin token kept in admin.json."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from admin.cli import config, output
from admin.cli.client import Client
from admin.cli.common import JsonOption, UrlOption, run
from admin.cli.errors import EXIT_OK, EXIT_USAGE, CliError


def login(
    email: Annotated[
        str | None, typer.Option(help="the admin's email (asked when left out)")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin, not a prompt")
    ] = False,
    url: UrlOption = None,
    json_out: JsonOption = False,
) -> None:
    """Sign in and keep the token (and the URL) for the next commands."""
    run(lambda: _login(email, password_stdin, url, json_out))


def _login(email: str | None, password_stdin: bool, url: str | None, json_out: bool) -> int:
    target = config.resolve_url(url)
    if not email:
        email = typer.prompt("Email")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise CliError("no password given", EXIT_USAGE)
    with Client(target) as client:
        response = client.call(
            "POST", "/auth/token", body={"email": email, "password": password}, login=True
        )
    token = response.data["access_token"]
    expires_at = int(time.time()) + int(response.data.get("expires_in", 0))
    path = config.save({"url": target, "email": email, "token": token, "expires_at": expires_at})
    if json_out:
        output.emit_json(
            {"url": target, "email": email, "expires_at": expires_at, "config": str(path)}
        )
    else:
        hours = int(response.data.get("expires_in", 0)) / 3600
        output.line(f"logged in to {target} as {email} (valid {hours:.1f} h; token in {path})")
    return EXIT_OK


def logout(json_out: JsonOption = False) -> None:
    """Forget the stored token."""

    def body() -> int:
        stored = config.load()
        had = bool(stored.pop("token", None))
        stored.pop("expires_at", None)
        if had:
            config.save(stored)
        if json_out:
            output.emit_json({"logged_out": had})
        else:
            output.line("logged out" if had else "not logged in")
        return EXIT_OK

    run(body)
