"""Model files on disk: hashing them, and installing one atomically with its hash checked.

An install writes a temp file beside the target, checks its size and sha256 against the
catalogue, then renames it into place, so a crash or a bad download never leaves a
half-written model. A model whose catalogue hash is unknown gets the hash of its first
install pinned beside it (``<file>.sha256``), which later checks compare against.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from inference.catalogue import ModelSpec
from inference.errors import ModelHashMismatch

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PIN_SUFFIX = ".sha256"  # hash pinned at install for models whose catalogue hash is unknown


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _HashCacheEntry:
    size: int
    mtime_ns: int
    sha256: str


# Hashing a 500 MB model takes about a second; `list` and `verify` in one process (or a
# test run) should not pay it twice for a file that has not changed.
_HASH_CACHE: dict[str, _HashCacheEntry] = {}
_HASH_CACHE_LOCK = threading.Lock()


def cached_sha256(path: Path) -> str:
    st = path.stat()
    key = str(path.resolve())
    with _HASH_CACHE_LOCK:
        hit = _HASH_CACHE.get(key)
        if hit and hit.size == st.st_size and hit.mtime_ns == st.st_mtime_ns:
            return hit.sha256
    digest = sha256_file(path)
    with _HASH_CACHE_LOCK:
        _HASH_CACHE[key] = _HashCacheEntry(st.st_size, st.st_mtime_ns, digest)
    return digest


def pinned_hash(path: Path) -> str | None:
    """The sha256 pinned beside ``path`` at its install, if any."""
    pin = path.with_name(path.name + PIN_SUFFIX)
    try:
        return pin.read_text().split()[0].strip().lower()
    except (OSError, IndexError):
        return None


def install_stream(
    spec: ModelSpec,
    stream: IO[bytes] | Any,
    models_dir: Path,
    *,
    total: int | None,
    progress: bool,
    origin: str,
) -> Path:
    """Write ``stream`` as ``spec``'s file in ``models_dir`` if its size and hash are the
    catalogue's (ModelHashMismatch otherwise, and nothing is left behind)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / spec.file
    # The temp file sits in the models dir so the final rename is atomic (same file
    # system); its dot-prefix keeps it out of the way of anything scanning *.onnx.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.file}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _progress_bar(total, spec.name, progress) as bar:
            size, got = _copy_hashed(stream, out, bar)
        _check_download(spec, size, got, origin)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _pin(spec, target, got, origin)
    _fsync_dir(target.parent)
    log.info("installed model %s at %s (%d bytes, sha256 %s)", spec.name, target, size, got)
    return target


def _copy_hashed(stream: IO[bytes] | Any, out: IO[bytes], bar: _progress_bar) -> tuple[int, str]:
    """Copy ``stream`` to ``out`` and onto the disk; return its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        bar(len(chunk))
    out.flush()
    os.fsync(out.fileno())
    return size, digest.hexdigest()


def _check_download(spec: ModelSpec, size: int, got: str, origin: str) -> None:
    if spec.size is not None and size != spec.size:
        raise ModelHashMismatch(
            f"model {spec.name!r} from {origin} has {size} bytes, expected {spec.size}",
            model=spec.name,
            size=size,
            expected_size=spec.size,
        )
    if spec.sha256 is not None and got != spec.sha256.lower():
        raise ModelHashMismatch(
            f"model {spec.name!r} from {origin} has sha256 {got}, expected "
            f"{spec.sha256}; the file was discarded",
            model=spec.name,
            sha256=got,
            expected_sha256=spec.sha256,
        )


def _pin(spec: ModelSpec, target: Path, got: str, origin: str) -> None:
    """Pin the installed file's hash when the catalogue has none; else drop a stale pin."""
    pin = target.with_name(target.name + PIN_SUFFIX)
    if spec.sha256 is None:
        # Trust on first install: later `verify` runs catch a file changed on disk.
        pin.write_text(f"{got}  {spec.file}\n")
        log.warning(
            "model %s has no sha256 in the catalogue; pinned %s from %s",
            spec.name,
            got,
            origin,
        )
    else:
        pin.unlink(missing_ok=True)


class _progress_bar:
    """A tqdm bar on stderr when asked for and tqdm is importable; otherwise a no-op."""

    def __init__(self, total: int | None, label: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total,
                    desc=label,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    leave=True,
                )
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self._bar = None

    def __enter__(self) -> _progress_bar:
        return self

    def __call__(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
