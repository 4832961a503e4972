"""Model registry: which models exist, where their files live, and whether they may be used.

Fetch and import write into the models directory atomically (temp file, hash check,
rename) so a crash or a bad download never leaves a half-written model in place.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import IO, Any, Literal

from inference.config import EngineConfig
from inference.errors import (
    ModelHashMismatch,
    ModelInvalid,
    ModelLicenceRefused,
    ModelNotInstalled,
)

log = logging.getLogger(__name__)

ModelKind = Literal["detector", "landmarker", "recognizer", "swapper", "enhancer"]
ModelState = Literal["installed", "unverified", "missing", "hash_mismatch", "size_mismatch"]

CHUNK = 1 << 20
PIN_SUFFIX = ".sha256"  # hash pinned at install for models whose catalogue hash is unknown
LICENCE_SETTING = (
    "SWAPMETER_ALLOW_NONCOMMERCIAL_MODELS=true (EngineConfig.allow_noncommercial_models)"
)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    layout: str | None = None
    colour: str | None = None
    normalisation: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    file: str
    sha256: str | None  # None: unknown upstream; checked by size and by the hash pinned at install
    size: int | None
    licence: str
    commercial_use: bool
    url: str | None
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    notes: str = ""


# Element types as the catalogue names them, and as ONNX Runtime does.
_ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "int64": "tensor(int64)",
    "uint8": "tensor(uint8)",
}


def check_interface(spec: ModelSpec, session: Any) -> None:
    """ModelInvalid unless the loaded model has the catalogue's interface for ``spec``:
    as many inputs, each of the same rank, fixed sizes and element type, and the same of
    the outputs where the catalogue lists each of them (it describes SCRFD's nine outputs
    as three families). Sizes that either side leaves open (a name, None) are not compared.
    Names are not compared: exports differ in them, and the code feeds inputs by position.

    Without this a model of another layout (NHWC), precision or size would fail every
    request with an internal error, or worse, give pictures made of the wrong pixels.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != len(spec.inputs):
        problems = [f"{len(inputs)} inputs, expected {len(spec.inputs)}"]
    else:
        problems = _mismatches("input", spec.inputs, inputs)
    if len(spec.outputs) == len(outputs):
        problems += _mismatches("output", spec.outputs, outputs)
    if problems:
        raise ModelInvalid(
            f"the file for model {spec.name} does not have its interface: " + "; ".join(problems),
            model=spec.name,
        )


def _mismatches(role: str, expected: tuple[TensorSpec, ...], actual: list[Any]) -> list[str]:
    problems = []
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        shape = list(got.shape)
        fixed_differ = len(shape) != len(want.shape) or any(
            isinstance(w, int) and isinstance(g, int) and w != g
            for w, g in zip(want.shape, shape, strict=False)
        )
        if fixed_differ:
            problems.append(f"{role} {index} has shape {shape}, expected {list(want.shape)}")
        wanted_type = _ORT_TYPES.get(want.dtype)
        if wanted_type is not None and got.type != wanted_type:
            problems.append(f"{role} {index} is {got.type}, expected {wanted_type}")
    return problems


@dataclass(frozen=True)
class ModelStatus:
    name: str
    kind: str
    file: str
    state: ModelState
    path: Path
    licence: str
    commercial_use: bool
    usable: bool  # installed, intact, and allowed by the licence setting
    size: int | None = None  # bytes on disk
    sha256: str | None = None  # of the file on disk, when it was hashed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("installed", "unverified")


@dataclass
class _HashCacheEntry:
    size: int
    mtime_ns: int
    sha256: str


def _tensor(raw: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=raw["name"],
        shape=tuple(raw.get("shape", ())),
        dtype=raw.get("dtype", "float32"),
        layout=raw.get("layout"),
        colour=raw.get("colour"),
        normalisation=raw.get("normalisation"),
    )


@cache
def load_catalogue() -> dict[str, ModelSpec]:
    """The built-in catalogue (inference/catalogue.json), by model name."""
    text = resources.files("inference").joinpath("catalogue.json").read_text(encoding="utf-8")
    specs: dict[str, ModelSpec] = {}
    for raw in json.loads(text)["models"]:
        specs[raw["name"]] = ModelSpec(
            name=raw["name"],
            kind=raw["kind"],
            file=raw["file"],
            sha256=(raw.get("sha256") or None),
            size=raw.get("size"),
            licence=raw["licence"],
            commercial_use=bool(raw["commercial_use"]),
            url=raw.get("url"),
            inputs=tuple(_tensor(t) for t in raw.get("inputs", ())),
            outputs=tuple(_tensor(t) for t in raw.get("outputs", ())),
            notes=raw.get("notes", ""),
        )
    return specs


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# Hashing a 500 MB model takes about a second; `list` and `verify` in one process (or a
# test run) should not pay it twice for a file that has not changed.
_HASH_CACHE: dict[str, _HashCacheEntry] = {}
_HASH_CACHE_LOCK = threading.Lock()


def _cached_sha256(path: Path) -> str:
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


@dataclass
class ModelRegistry:
    """Models known to the catalogue, resolved against ``config.models_dir``."""

    config: EngineConfig
    catalogue: dict[str, ModelSpec] = field(default_factory=lambda: dict(load_catalogue()))

    @property
    def models_dir(self) -> Path:
        return Path(self.config.models_dir).expanduser()

    # -- lookup -----------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.catalogue[name]
        except KeyError:
            known = ", ".join(sorted(self.catalogue))
            raise ModelNotInstalled(
                f"unknown model {name!r}; the catalogue knows: {known}", model=name
            ) from None

    def file_path(self, name: str) -> Path:
        """Where the model's file lives (or would live) in the models directory."""
        return self.models_dir / self.spec(name).file

    def installed(self, name: str) -> bool:
        """True when the file is present and has the expected size (hash not re-checked)."""
        spec = self.spec(name)
        path = self.models_dir / spec.file
        try:
            size = path.stat().st_size
        except OSError:
            return False
        return path.is_file() and (spec.size is None or size == spec.size)

    def allowed(self, name: str) -> bool:
        spec = self.spec(name)
        return spec.commercial_use or self.config.allow_noncommercial_models

    def check_licence(self, name: str) -> None:
        spec = self.spec(name)
        if not self.allowed(name):
            raise ModelLicenceRefused(
                f"model {name!r} is licensed for non-commercial use only ({spec.licence}); "
                f"it is refused unless {LICENCE_SETTING} is set by an operator who has the "
                "right to use it",
                model=name,
                licence=spec.licence,
            )

    def path(self, name: str) -> Path:
        """The installed model's file, ready to load.

        Raises ModelLicenceRefused (non-commercial model, not allowed by the settings),
        ModelNotInstalled (missing file) or ModelHashMismatch (wrong size on disk). The
        full hash is checked by ``verify``, ``fetch`` and ``import_file``, not on every
        load.
        """
        spec = self.spec(name)
        self.check_licence(name)
        path = self.models_dir / spec.file
        if not path.is_file():
            raise ModelNotInstalled(
                f"model {name!r} is not installed: {path} is missing. Install it with "
                f"`swapmeter models fetch {name}` (or `swapmeter models import PATH --name "
                f"{name}` on a machine without internet access)",
                model=name,
                path=str(path),
            )
        if spec.size is not None and path.stat().st_size != spec.size:
            raise ModelHashMismatch(
                f"model {name!r} at {path} has {path.stat().st_size} bytes, expected "
                f"{spec.size}; re-install it with `swapmeter models fetch {name}`",
                model=name,
                path=str(path),
            )
        return path

    # -- status -----------------------------------------------------------------------

    def _pinned_hash(self, path: Path) -> str | None:
        pin = path.with_name(path.name + PIN_SUFFIX)
        try:
            return pin.read_text().split()[0].strip().lower()
        except (OSError, IndexError):
            return None

    def status(self, name: str, *, check_hash: bool = True) -> ModelStatus:
        spec = self.spec(name)
        path = self.models_dir / spec.file
        allowed = self.allowed(name)

        def make(state: ModelState, **kw: Any) -> ModelStatus:
            usable = state in ("installed", "unverified") and allowed
            return ModelStatus(
                name=name,
                kind=spec.kind,
                file=spec.file,
                state=state,
                path=path,
                licence=spec.licence,
                commercial_use=spec.commercial_use,
                usable=usable,
                **kw,
            )

        if not path.is_file():
            return make("missing", detail=f"run `swapmeter models fetch {name}`")
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            return make("size_mismatch", size=size, detail=f"expected {spec.size} bytes")
        if not check_hash:
            return make("installed", size=size)
        digest = _cached_sha256(path)
        expected = spec.sha256 or self._pinned_hash(path)
        if expected is None:
            return make(
                "unverified",
                size=size,
                sha256=digest,
                detail="no known sha256 for this model and none pinned at install",
            )
        if digest != expected.lower():
            return make(
                "hash_mismatch", size=size, sha256=digest, detail=f"expected sha256 {expected}"
            )
        return make("installed", size=size, sha256=digest)

    def list(self) -> builtins.list[ModelStatus]:
        """Status of every catalogue model (hashes the installed files)."""
        return [self.status(name) for name in self.catalogue]

    # `builtins.list`: inside this class `list` is the method above.
    def verify(self, names: builtins.list[str] | None = None) -> builtins.list[ModelStatus]:
        """Hash-check the installed models (or ``names``); missing models are skipped
        unless named explicitly. Callers treat any state but installed/unverified as a failure.
        """
        if names:
            return [self.status(n) for n in names]
        return [s for s in self.list() if s.state != "missing"]

    # -- install ----------------------------------------------------------------------

    def url_for(self, name: str, url: str | None = None) -> str:
        spec = self.spec(name)
        if url:
            return url
        if self.config.models_base_url:
            return self.config.models_base_url.rstrip("/") + "/" + spec.file
        if not spec.url:
            raise ModelNotInstalled(
                f"model {name!r} has no public download; install it with "
                f"`swapmeter models import PATH --name {name}`",
                model=name,
            )
        return spec.url

    def fetch(
        self,
        name: str,
        progress: bool = True,
        *,
        url: str | None = None,
        force: bool = False,
        timeout: float = 60.0,
    ) -> Path:
        """Download the model into the models directory and check its hash.

        A model already installed with the right hash is left alone unless ``force``.
        Raises ModelHashMismatch (nothing is left behind) or ModelNotInstalled when the
        download fails.
        """
        spec = self.spec(name)
        target = self.models_dir / spec.file
        if not force and target.is_file():
            current = self.status(name)
            if current.state == "installed":
                log.info("model %s already installed at %s", name, target)
                return target
        source = self.url_for(name, url)
        log.info("fetching model %s from %s", name, source)
        request = urllib.request.Request(source, headers={"User-Agent": "swapmeter-models"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else spec.size
                return self._install_stream(
                    spec, response, total=total, progress=progress, origin=source
                )
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise ModelNotInstalled(
                f"could not download model {name!r} from {source}: {exc}; fetch it elsewhere "
                f"and run `swapmeter models import PATH --name {name}`",
                model=name,
                url=source,
            ) from exc

    def import_file(self, path: Path | str, name: str | None = None) -> Path:
        """Copy a model file the operator obtained into the models directory.

        ``name`` defaults to the catalogue entry whose file name (or, failing that, whose
        sha256) matches. Raises ModelHashMismatch when the file is not the expected one.
        """
        src = Path(path).expanduser()
        if not src.is_file():
            raise ModelNotInstalled(f"{src} is not a file", path=str(src))
        if name is None:
            name = self._guess_name(src)
        spec = self.spec(name)
        with src.open("rb") as fh:
            return self._install_stream(
                spec, fh, total=src.stat().st_size, progress=False, origin=str(src)
            )

    def _guess_name(self, src: Path) -> str:
        for spec in self.catalogue.values():
            if spec.file == src.name:
                return spec.name
        digest = sha256_file(src)
        for spec in self.catalogue.values():
            if spec.sha256 and spec.sha256 == digest:
                return spec.name
        raise ModelNotInstalled(
            f"{src.name} matches no catalogue model by file name or sha256; pass --name",
            path=str(src),
        )

    def _install_stream(
        self,
        spec: ModelSpec,
        stream: IO[bytes] | Any,
        *,
        total: int | None,
        progress: bool,
        origin: str,
    ) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        target = self.models_dir / spec.file
        # The temp file sits in the models dir so the final rename is atomic (same file
        # system); its dot-prefix keeps it out of the way of anything scanning *.onnx.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.file}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, _progress_bar(total, spec.name, progress) as bar:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            got = digest.hexdigest()
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
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
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
        _fsync_dir(target.parent)
        log.info("installed model %s at %s (%d bytes, sha256 %s)", spec.name, target, size, got)
        return target


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


def iter_specs(kind: str | None = None) -> Iterator[ModelSpec]:
    """Catalogue entries, optionally of one kind (for the engine's model choices)."""
    for spec in load_catalogue().values():
        if kind is None or spec.kind == kind:
            yield spec
