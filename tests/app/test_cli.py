"""The ``swapmeter`` command as an operator meets it."""

from __future__ import annotations

import fcntl
import signal
from pathlib import Path

import pytest

from app.cli import main
from app.core.settings import get_settings


def refused_settings(capsys: pytest.CaptureFixture[str]) -> str:
    """What ``swapmeter migrate`` prints when the environment's settings are refused."""
    get_settings.cache_clear()
    try:
        assert main(["migrate"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "the settings cannot be used" in err and "Traceback" not in err
    return err


def test_unusable_settings_are_one_line_each_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWAPMETER_ENVIRONMENT", "production")
    monkeypatch.delenv("SWAPMETER_JWT_SECRET", raising=False)
    monkeypatch.setenv("SWAPMETER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert "JWT_SECRET" in refused_settings(capsys)


def test_a_recharge_limit_past_what_balances_can_hold_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWAPMETER_MAX_AMOUNT", str(4 * 10**18))
    err = refused_settings(capsys)
    assert "SWAPMETER_MAX_AMOUNT" in err and "1000000000000000" in err


def test_bench_offers_the_benchmarks_not_their_helpers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    usage = capsys.readouterr().out
    assert "api" in usage and "_harness" not in usage


def test_a_second_dev_on_one_data_dir_is_refused_before_it_touches_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It would take over the first one's PostgreSQL and Redis, and stop them on exit."""
    monkeypatch.setenv("SWAPMETER_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's handlers
    get_settings.cache_clear()
    try:
        with open(tmp_path / "dev.lock", "w") as first:
            fcntl.flock(first, fcntl.LOCK_EX)  # held by the `swapmeter dev` running
            with pytest.raises(SystemExit, match="already running"):
                main(["dev"])
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "postgres").exists() and not (tmp_path / "redis").exists()


def test_the_dev_banner_shows_the_admin_password_once_when_it_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first `swapmeter dev` on a data dir makes the admin's password and shows it;
    later starts say where it is kept (.swapmeter/dev-admin-password, which the README's
    tour reads) and never print it again."""
    import argparse

    from app.cli import _dev_admin_defaults, _print_banner

    monkeypatch.setenv("SWAPMETER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SWAPMETER_BOOTSTRAP_ADMIN_EMAIL", raising=False)
    monkeypatch.delenv("SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD", raising=False)
    args = argparse.Namespace(host="127.0.0.1", port=8000)
    banners = []
    get_settings.cache_clear()
    try:
        for _start in range(2):
            new = _dev_admin_defaults(tmp_path)
            get_settings.cache_clear()
            _print_banner(get_settings(), args, None, new_password=new)
            banners.append(capsys.readouterr().out)
            monkeypatch.delenv("SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD")  # a new process
    finally:
        get_settings.cache_clear()
    password_file = tmp_path / "dev-admin-password"
    password = password_file.read_text().strip()
    assert len(password) >= 16 and password_file.stat().st_mode & 0o077 == 0
    first, second = banners
    assert f"admin@swapmeter.local / {password} (shown once" in first
    assert password not in second and f"password in {password_file}" in second
