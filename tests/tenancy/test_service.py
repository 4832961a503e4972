"""Tenancy rules that need no HTTP: slugs and import validation."""

from __future__ import annotations

from app.tenancy.service import ImportEntry, _entry_problem, slugify


def test_slugs_are_lowercase_ascii_with_single_dashes() -> None:
    assert slugify("Acme Corp.") == "acme-corp"
    assert slugify("  Ünïcode -- Näme  ") == "unicode-name"
    assert slugify("日本") == ""
    assert len(slugify("x" * 100)) == 64


def test_import_entries_are_checked_one_by_one() -> None:
    assert _entry_problem(ImportEntry("ok", "a@b.co", "Name")) is None
    assert _entry_problem(ImportEntry(" padded"))[0] == "InvalidExternalId"
    assert _entry_problem(ImportEntry("nul\x00"))[0] == "InvalidExternalId"
    assert _entry_problem(ImportEntry("ok", "a@b"))[0] == "InvalidEmail"
    assert _entry_problem(ImportEntry("ok", None, "n" * 256))[0] == "InvalidDisplayName"
    assert _entry_problem(ImportEntry("ok", None, "nul\x00"))[1].endswith("surrogates")
    assert _entry_problem(ImportEntry("a/b"))[0] == "InvalidExternalId"
    assert _entry_problem(ImportEntry("."))[0] == "InvalidExternalId"
    assert _entry_problem(ImportEntry("a.b")) is None
