"""Model registry: where the catalogue's models live, whether they may be used, their state.

Fetch and import hand the bytes to ``inference.model_files``, which writes them into the
models directory atomically (temp file, hash check, rename) so a crash or a bad download
never leaves a half-written model in place.
"""

from __future__ import annotations

import builtins
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inference.catalogue import ModelSpec, load_catalogue
from inference.config import EngineConfig
from inference.errors import ModelHashMismatch, ModelLicenceRefused, ModelNotInstalled
from inference.model_files import cached_sha256, install_stream, pinned_hash, sha256_file

log = logging.getLogger(__name__)

ModelState = Literal["installed", "unverified", "missing", "hash_mismatch", "size_mismatch"]

LICENCE_SETTING = (
    "SWAPMETER_ALLOW_NONCOMMERCIAL_MODELS=true (EngineConfig.allow_noncommercial_models)"
)


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
        digest = cached_sha256(path)
        expected = spec.sha256 or pinned_hash(path)
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
                return install_stream(
                    spec, response, self.models_dir, total=total, progress=progress, origin=source
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
            return install_stream(
                spec, fh, self.models_dir, total=src.stat().st_size, progress=False, origin=str(src)
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
