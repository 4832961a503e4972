"""`swapmeter models ...`: list, verify, fetch and import the model files the engine runs.

The app's entry point owns the top-level parser; it hands us its subparsers and a
callable that builds the EngineConfig from settings, so this module never reads settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from inference.config import EngineConfig
from inference.errors import InferenceError, ModelHashMismatch
from inference.registry import ModelRegistry, ModelStatus

EXIT_OK = 0
EXIT_FAILED = 1  # verify failed, hash mismatch, download failed
EXIT_USAGE = 2

ConfigFactory = Callable[[], EngineConfig]


def add_models_commands(subparsers: argparse._SubParsersAction, make_config: ConfigFactory) -> None:
    """Register ``models list | verify | fetch NAME | import PATH`` on ``subparsers``.

    Each command sets ``func`` to a callable taking the parsed namespace and returning the
    process exit code.
    """
    models = subparsers.add_parser(
        "models",
        help="list, verify, download or import model files",
        description="Manage the model files in SWAPMETER_MODELS_DIR.",
    )
    models.set_defaults(func=lambda args: _usage(models))
    sub = models.add_subparsers(dest="models_command", metavar="COMMAND")

    p_list = sub.add_parser("list", help="every known model and whether it is installed")
    p_list.add_argument(
        "--no-hash", action="store_true", help="skip hashing installed files (faster)"
    )
    p_list.set_defaults(func=lambda args: cmd_list(args, make_config))

    p_verify = sub.add_parser("verify", help="check installed model files against their hashes")
    p_verify.add_argument(
        "names", nargs="*", metavar="NAME", help="models to check (default: all installed)"
    )
    p_verify.set_defaults(func=lambda args: cmd_verify(args, make_config))

    p_fetch = sub.add_parser("fetch", help="download a model and check its hash")
    p_fetch.add_argument("name", metavar="NAME")
    p_fetch.add_argument("--url", help="download from this URL instead of the catalogue's")
    p_fetch.add_argument("--force", action="store_true", help="download even if installed")
    p_fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    p_fetch.set_defaults(func=lambda args: cmd_fetch(args, make_config))

    p_import = sub.add_parser("import", help="install a model file obtained elsewhere")
    p_import.add_argument("path", metavar="PATH", type=Path)
    p_import.add_argument("--name", help="catalogue name (default: guessed from file name or hash)")
    p_import.set_defaults(func=lambda args: cmd_import(args, make_config))


def _usage(parser: argparse.ArgumentParser, out: TextIO | None = None) -> int:
    parser.print_help(out or sys.stderr)
    return EXIT_USAGE


def _known(registry: ModelRegistry, name: str, err: TextIO) -> bool:
    if name in registry.catalogue:
        return True
    print(
        f"unknown model {name!r}; known models: {', '.join(sorted(registry.catalogue))}",
        file=err,
    )
    return False


def _row(status: ModelStatus) -> str:
    licence = "commercial ok" if status.commercial_use else "non-commercial"
    usable = "usable" if status.usable else "not usable"
    detail = f"  ({status.detail})" if status.detail else ""
    return (
        f"{status.name:<20} {status.kind:<11} {status.state:<14} {licence:<15} "
        f"{usable:<11} {status.file}{detail}"
    )


def cmd_list(
    args: argparse.Namespace, make_config: ConfigFactory, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    registry = ModelRegistry(make_config())
    print(f"models dir: {registry.models_dir}", file=out)
    failed = False
    for name in registry.catalogue:
        status = registry.status(name, check_hash=not args.no_hash)
        failed |= status.state in ("hash_mismatch", "size_mismatch")
        print(_row(status), file=out)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_verify(
    args: argparse.Namespace, make_config: ConfigFactory, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    registry = ModelRegistry(make_config())
    for name in args.names:
        if not _known(registry, name, sys.stderr):
            return EXIT_USAGE
    results = registry.verify(args.names or None)
    if not results:
        print(f"no models installed in {registry.models_dir}", file=out)
    bad = [s for s in results if not s.ok]
    for status in results:
        print(_row(status), file=out)
    if bad:
        print(f"verify failed: {', '.join(s.name for s in bad)}", file=out)
        return EXIT_FAILED
    return EXIT_OK


def cmd_fetch(
    args: argparse.Namespace, make_config: ConfigFactory, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    registry = ModelRegistry(make_config())
    if not _known(registry, args.name, sys.stderr):
        return EXIT_USAGE
    try:
        path = registry.fetch(args.name, progress=not args.quiet, url=args.url, force=args.force)
    except ModelHashMismatch as exc:
        print(f"hash mismatch: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except InferenceError as exc:
        print(f"fetch failed: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    print(f"installed {args.name} at {path}", file=out)
    _licence_note(registry, args.name, out)
    return EXIT_OK


def cmd_import(
    args: argparse.Namespace, make_config: ConfigFactory, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    registry = ModelRegistry(make_config())
    if args.name and not _known(registry, args.name, sys.stderr):
        return EXIT_USAGE
    if not args.path.is_file():
        print(f"{args.path} is not a file", file=sys.stderr)
        return EXIT_USAGE
    try:
        path = registry.import_file(args.path, name=args.name)
    except ModelHashMismatch as exc:
        print(f"hash mismatch: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except InferenceError as exc:
        print(f"import failed: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    name = args.name or next(s.name for s in registry.catalogue.values() if s.file == path.name)
    print(f"installed {name} at {path}", file=out)
    _licence_note(registry, name, out)
    return EXIT_OK


def _licence_note(registry: ModelRegistry, name: str, out: TextIO) -> None:
    if not registry.allowed(name):
        spec = registry.spec(name)
        print(
            f"note: {name} is non-commercial ({spec.licence}); the engine refuses it unless "
            "SWAPMETER_ALLOW_NONCOMMERCIAL_MODELS=true",
            file=out,
        )


def _env_config() -> EngineConfig:
    """Fallback for running this module alone; the app builds the config from its settings."""
    env = os.environ
    return EngineConfig(
        models_dir=Path(env.get("SWAPMETER_MODELS_DIR", "models")),
        allow_noncommercial_models=env.get("SWAPMETER_ALLOW_NONCOMMERCIAL_MODELS", "").lower()
        in ("1", "true", "yes"),
        models_base_url=env.get("SWAPMETER_MODELS_BASE_URL") or None,
    )


def main(argv: list[str] | None = None, make_config: ConfigFactory = _env_config) -> int:
    """Standalone ``python -m inference.cli models ...``."""
    parser = argparse.ArgumentParser(prog="swapmeter")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_models_commands(subparsers, make_config)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        return _usage(parser)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
