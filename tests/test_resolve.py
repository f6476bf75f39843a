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
