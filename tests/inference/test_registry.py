"""Model registry and the `models` CLI: catalogue, licence gating, fetch, import, verify.

Downloads are served by a local http.server in a thread: the public URLs are never used.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from inference.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_models_commands
from inference.config import EngineConfig
from inference.errors import ModelHashMismatch, ModelLicenceRefused, ModelNotInstalled
from inference.registry import ModelRegistry, load_catalogue

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODELS_DIR = Path(os.environ.get("SWAPMETER_MODELS_DIR", SHARED / "models"))
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SHA = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory served, base URL) of a local HTTP server."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    return d


def registry_for(models_dir: Path, **overrides: object) -> ModelRegistry:
    return ModelRegistry(EngineConfig(models_dir=models_dir, **overrides))  # type: ignore[arg-type]


def leftovers(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir())


def test_catalogue_lists_the_models_with_licences_hashes_and_tensor_contracts() -> None:
    catalogue = load_catalogue()
    assert {"yunet", "scrfd_2.5g", "arcface_w600k_r50", "inswapper_128", "gfpgan_1.4"} <= set(
        catalogue
    )
    yunet = catalogue["yunet"]
    assert yunet.kind == "detector" and yunet.licence == "MIT" and yunet.commercial_use
    assert yunet.sha256 == YUNET_SHA and yunet.file == YUNET_FILE
    assert yunet.url and yunet.url.endswith("/face_detection_yunet/" + YUNET_FILE)
    assert yunet.inputs[0].name == "input" and yunet.inputs[0].shape == (1, 3, 640, 640)
    swapper = catalogue["inswapper_128"]
    assert swapper.kind == "swapper" and not swapper.commercial_use
    assert {t.name for t in swapper.inputs} == {"target", "source"}
    for name in ("scrfd_2.5g", "arcface_w600k_r50", "inswapper_128", "gfpgan_1.4"):
        spec = catalogue[name]
        assert spec.url == (
            "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
            + spec.file
        )
        assert spec.inputs and spec.outputs
        assert spec.sha256 is None or len(spec.sha256) == 64


def test_path_returns_an_installed_model() -> None:
    registry = registry_for(MODELS_DIR)
    assert registry.path("yunet") == MODELS_DIR / YUNET_FILE
    assert registry.installed("yunet")


def test_path_of_a_missing_model_says_how_to_install_it(models_dir: Path) -> None:
    registry = registry_for(models_dir)
    assert not registry.installed("yunet")
    with pytest.raises(ModelNotInstalled) as err:
        registry.path("yunet")
    assert "swapmeter models fetch yunet" in err.value.message
    assert err.value.code == "ModelNotInstalled"


def test_non_commercial_models_are_refused_unless_the_setting_allows_them(
    models_dir: Path,
) -> None:
    with pytest.raises(ModelLicenceRefused) as err:
        registry_for(models_dir).path("inswapper_128")
    assert "non-commercial" in err.value.message
    assert "SWAPMETER_ALLOW_NONCOMMERCIAL_MODELS" in err.value.message
    # Allowed: the next question is whether it is installed.
    with pytest.raises(ModelNotInstalled):
        registry_for(models_dir, allow_noncommercial_models=True).path("inswapper_128")


def test_unknown_model_names_are_refused_with_the_known_ones(models_dir: Path) -> None:
    with pytest.raises(ModelNotInstalled) as err:
        registry_for(models_dir).path("no_such_model")
    assert "yunet" in err.value.message


def test_list_reports_installed_missing_and_hash_mismatch(models_dir: Path) -> None:
    shutil.copy(MODELS_DIR / YUNET_FILE, models_dir / YUNET_FILE)
    dynamic = "face_detection_yunet_2023mar_dynamic.onnx"
    data = bytearray((MODELS_DIR / dynamic).read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    (models_dir / dynamic).write_bytes(bytes(data))

    states = {s.name: s for s in registry_for(models_dir).list()}
    assert states["yunet"].state == "installed" and states["yunet"].usable
    assert states["yunet_dynamic"].state == "hash_mismatch" and not states["yunet_dynamic"].usable
    assert states["inswapper_128"].state == "missing"
    assert [s.name for s in registry_for(models_dir).verify() if not s.ok] == ["yunet_dynamic"]


def test_fetch_downloads_checks_the_hash_and_installs(
    models_dir: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    shutil.copy(MODELS_DIR / YUNET_FILE, root / YUNET_FILE)
    registry = registry_for(models_dir, models_base_url=base + "/")
    path = registry.fetch("yunet", progress=True)
    assert path == models_dir / YUNET_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == YUNET_SHA
    assert registry.status("yunet").state == "installed"
    assert leftovers(models_dir) == [YUNET_FILE]


def test_fetch_with_a_wrong_hash_raises_and_leaves_no_partial_file(
    models_dir: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    (root / "evil.onnx").write_bytes(b"\0" * 232589)  # right size, wrong bytes
    registry = registry_for(models_dir)
    with pytest.raises(ModelHashMismatch) as err:
        registry.fetch("yunet", progress=False, url=base + "/evil.onnx")
    assert YUNET_SHA in err.value.message
    assert leftovers(models_dir) == []


def test_fetch_of_a_wrong_size_download_keeps_the_installed_model(
    models_dir: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    shutil.copy(MODELS_DIR / YUNET_FILE, models_dir / YUNET_FILE)
    (root / YUNET_FILE).write_bytes(b"truncated")
    with pytest.raises(ModelHashMismatch):
        registry_for(models_dir, models_base_url=base).fetch("yunet", progress=False, force=True)
    assert registry_for(models_dir).status("yunet").state == "installed"
    assert leftovers(models_dir) == [YUNET_FILE]


def test_fetch_failure_is_reported_and_leaves_nothing(
    models_dir: Path, served: tuple[Path, str]
) -> None:
    _, base = served
    with pytest.raises(ModelNotInstalled) as err:
        registry_for(models_dir).fetch("yunet", progress=False, url=base + "/missing.onnx")
    assert "models import" in err.value.message
    assert leftovers(models_dir) == []


def test_models_without_a_known_hash_are_pinned_at_install(
    models_dir: Path, served: tuple[Path, str], tmp_path: Path
) -> None:
    root, base = served
    payload = b"pretend this is gfpgan" * 100
    (root / "gfpgan_1.4.onnx").write_bytes(payload)
    registry = registry_for(models_dir, models_base_url=base)
    assert registry.spec("gfpgan_1.4").sha256 is None
    path = registry.fetch("gfpgan_1.4", progress=False)
    pin = (models_dir / "gfpgan_1.4.onnx.sha256").read_text().split()[0]
    assert pin == hashlib.sha256(payload).hexdigest()
    assert registry.status("gfpgan_1.4").state == "installed"
    path.write_bytes(payload[:-1] + b"!")  # changed on disk after install
    assert registry.status("gfpgan_1.4").state == "hash_mismatch"


def test_import_copies_a_good_file_and_refuses_a_bad_one(models_dir: Path, tmp_path: Path) -> None:
    registry = registry_for(models_dir)
    installed = registry.import_file(MODELS_DIR / YUNET_FILE)  # name guessed from the file
    assert installed == models_dir / YUNET_FILE and registry.status("yunet").state == "installed"

    bogus = tmp_path / "yunet_copy.onnx"
    bogus.write_bytes(b"x" * 237823)
    with pytest.raises(ModelHashMismatch):
        registry.import_file(bogus, name="yunet_dynamic")
    assert leftovers(models_dir) == [YUNET_FILE]


def test_import_finds_the_model_by_hash_under_another_file_name(
    models_dir: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "detector.onnx"
    shutil.copy(MODELS_DIR / YUNET_FILE, renamed)
    assert registry_for(models_dir).import_file(renamed) == models_dir / YUNET_FILE


def test_custom_catalogue_entries_can_be_registered(models_dir: Path) -> None:
    catalogue = dict(load_catalogue())
    catalogue["yunet_copy"] = replace(catalogue["yunet"], name="yunet_copy", file="copy.onnx")
    registry = ModelRegistry(EngineConfig(models_dir=models_dir), catalogue=catalogue)
    registry.import_file(MODELS_DIR / YUNET_FILE, name="yunet_copy")
    assert registry.path("yunet_copy") == models_dir / "copy.onnx"


# -- CLI --------------------------------------------------------------------------------


def run_cli(argv: list[str], config: EngineConfig) -> int:
    parser = argparse.ArgumentParser(prog="swapmeter")
    sub = parser.add_subparsers(dest="command")
    add_models_commands(sub, lambda: config)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)
    return int(args.func(args))


def test_cli_list_and_verify(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = EngineConfig(models_dir=models_dir)
    shutil.copy(MODELS_DIR / YUNET_FILE, models_dir / YUNET_FILE)
    assert run_cli(["models", "list"], config) == EXIT_OK
    out = capsys.readouterr().out
    assert "yunet " in out and "installed" in out and "missing" in out
    assert run_cli(["models", "verify"], config) == EXIT_OK

    (models_dir / YUNET_FILE).write_bytes(b"\0" * 232589)
    assert run_cli(["models", "verify"], config) == EXIT_FAILED
    assert "verify failed: yunet" in capsys.readouterr().out
    assert run_cli(["models", "list"], config) == EXIT_FAILED


def test_cli_fetch_and_import(
    models_dir: Path, served: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, base = served
    config = EngineConfig(models_dir=models_dir)
    shutil.copy(MODELS_DIR / YUNET_FILE, root / YUNET_FILE)
    (root / "bad.onnx").write_bytes(b"bad")
    assert run_cli(
        ["models", "fetch", "yunet", "--url", f"{base}/bad.onnx", "--quiet"], config
    ) == (EXIT_FAILED)
    assert "hash mismatch" in capsys.readouterr().err
    assert run_cli(["models", "fetch", "yunet", "--url", f"{base}/{YUNET_FILE}"], config) == EXIT_OK
    assert (models_dir / YUNET_FILE).is_file()

    assert (
        run_cli(
            ["models", "import", str(MODELS_DIR / "face_detection_yunet_2023mar_dynamic.onnx")],
            config,
        )
        == EXIT_OK
    )
    assert "installed yunet_dynamic" in capsys.readouterr().out


def test_cli_usage_errors_exit_2(models_dir: Path, tmp_path: Path) -> None:
    config = EngineConfig(models_dir=models_dir)
    assert run_cli(["models"], config) == EXIT_USAGE
    assert run_cli(["models", "fetch"], config) == EXIT_USAGE
    assert run_cli(["models", "fetch", "no_such_model"], config) == EXIT_USAGE
    assert run_cli(["models", "import", str(tmp_path / "nope.onnx")], config) == EXIT_USAGE
    assert run_cli(["models", "verify", "no_such_model"], config) == EXIT_USAGE
