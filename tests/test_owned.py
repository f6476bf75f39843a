"""Never delete what is not yours: the one guard every delete and replace goes through, each place that deletes,
and the preset / ablation drill with a user's corpus, judgments and cache at absolute paths."""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

import paths
from conftest import REPO, Project, tiny_params, write_beir
from irforge.contract import SCHEMAS, artifacts, owned
from irforge.contract.owned import NotOwnedError


@pytest.fixture
def user() -> Iterator[Path]:
    """A folder of the user's, outside every folder irforge owns (the tests' own temporary folders are claimed),
    with a file and a sub-folder in it."""
    folder = Path(tempfile.mkdtemp(prefix="irforge-test-user-"))
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.txt").write_text("also mine", encoding="utf-8")
    assert owned.owner(folder / "notes.txt") is None
    yield folder
    shutil.rmtree(folder)


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its bytes' hash (a link as where it points): what 'left in place' means."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir() else artifacts.sha256_file(p)
    return out


# ---------------------------------------------------------------- the guard itself


def test_the_guard_allows_inside_a_claimed_folder_and_refuses_everything_else(tmp_path: Path, user: Path) -> None:
    inside = tmp_path / "a" / "b.txt"
    inside.parent.mkdir()
    inside.write_text("x")
    assert owned.remove(inside) and not inside.exists()
    with pytest.raises(NotOwnedError, match=rf"refusing to delete {user / 'notes.txt'}.*outside the folders irforge owns"):
        owned.remove(user / "notes.txt")
    with pytest.raises(NotOwnedError, match="refusing to delete"):
        owned.remove(user / "sub")
    # '..' out of a claimed folder, and the claimed folder itself, are refused too.
    with pytest.raises(NotOwnedError):
        owned.remove(tmp_path / os.path.relpath(user / "notes.txt", tmp_path))
    owned.claim(user / "sub")  # a claimed folder (artifacts/): what is inside is irforge's, the folder itself is not
    try:
        with pytest.raises(NotOwnedError):
            owned.remove(user / "sub")
        assert owned.owner(user / "sub" / "deep.txt") == (user / "sub").resolve()
    finally:
        owned.release(user / "sub")
    assert snapshot(user) == {"notes.txt": artifacts.sha256_file(user / "notes.txt"), "sub": "dir",
                              "sub/deep.txt": artifacts.sha256_file(user / "sub" / "deep.txt")}


def test_a_link_is_removed_as_a_link_and_a_linked_folder_is_not_a_way_out(tmp_path: Path, user: Path) -> None:
    before = snapshot(user)
    # A link irforge made, inside its folder, to the user's folder: removing it removes the link only.
    link = tmp_path / "corpus"
    os.symlink(user, link)
    assert owned.remove(link)
    assert not link.is_symlink() and snapshot(user) == before
    # Through a linked folder the path leads outside: refused, wherever the link sits.
    os.symlink(user, link)
    with pytest.raises(NotOwnedError, match=str(user / "notes.txt")):
        owned.remove(link / "notes.txt")
    with pytest.raises(NotOwnedError):
        owned.symlink(tmp_path / "elsewhere", link / "sub")
    with pytest.raises(NotOwnedError):
        owned.replace(tmp_path / "corpus" / "notes.txt", tmp_path / "stolen.txt")
    assert snapshot(user) == before


def test_a_row_cache_that_holds_the_project_or_home_is_refused(tmp_path: Path) -> None:
    for cache in (str(tmp_path), "..", "/", str(Path.home())):
        with pytest.raises(NotOwnedError, match="give the row cache a folder of its own"):
            owned.claim_project(tmp_path / "project", cache)


def test_a_named_output_and_a_temporary_folder_are_irforges_to_replace(user: Path) -> None:
    sheet = user / "judgments.csv"
    sheet.write_text("old")
    with pytest.raises(NotOwnedError):
        artifacts.write_text_atomic(sheet, "new")
    owned.claim(sheet, itself=True)  # what `irforge judge export --out` does with the file the user names
    try:
        artifacts.write_text_atomic(sheet, "new")
    finally:
        owned.release(sheet)
    assert sheet.read_text() == "new"
    assert sorted(p.name for p in user.iterdir()) == ["judgments.csv", "notes.txt", "sub"]  # no temporary left
    with owned.temp_dir(prefix="irforge-test-") as scratch:
        (scratch / "f").write_text("x")
    assert not scratch.exists()
    with pytest.raises(NotOwnedError):
        owned.remove(scratch.parent / "not-made-by-irforge")


# ---------------------------------------------------------------- each place that deletes or replaces


def _run_table() -> pa.Table:
    return pa.table({"system": ["bm25"], "query_id": ["q"], "doc_id": ["d"], "rank": pa.array([1], pa.int32()),
                     "score": [1.0]}, schema=SCHEMAS["run"])


def _write_artifact(user: Path) -> None:
    artifacts.write_artifact(_run_table(), user / "notes.txt", "run", {})


def _write_text(user: Path) -> None:
    artifacts.write_text_atomic(user / "notes.txt", "overwritten")


def _publish_dir(user: Path) -> None:
    with artifacts.publish_dir(user / "sub", {}) as tmp:
        (tmp / "x").write_text("x")


def _leftovers(user: Path) -> None:
    (user / ".notes.txt.tmp-1").write_text("looks like a temporary of ours")
    artifacts.write_artifact(_run_table(), user / "notes.txt", "run", {})


def _row_cache(user: Path) -> None:
    from irforge.models.cache import EmbeddingCache

    EmbeddingCache(user).put(["d"], ["k"], [[0.0, 1.0]])


def _join_model_parts(user: Path) -> None:
    from irforge.models.resolve import _join

    _join([user / "sub" / "deep.txt"], user / "notes.txt")


def _served_version(user: Path) -> None:
    from irforge.ops import serving

    (user / "serve" / "main" / "versions" / "v000001").mkdir(parents=True)
    (user / "serve" / "main" / "versions" / "v000001" / "manifest.json").write_text("{}")
    serving.switch(user, "main", "v000001")


def _prune(user: Path) -> None:
    from irforge.ops import serving

    for v in ("v000001", "v000002", "v000003"):
        (user / "serve" / "main" / "versions" / v).mkdir(parents=True)
        (user / "serve" / "main" / "versions" / v / "manifest.json").write_text("{}")
    serving.prune(user, "main", keep=1)


def _commit_version(user: Path) -> None:
    from irforge.ops import serving

    tmp = user / "sub"
    (tmp / "manifest.json").write_text("{}")
    (user / "serve" / "main" / "versions").mkdir(parents=True)
    serving.commit_version(user, "main", "v000001", tmp)


def _variant_folder(user: Path) -> None:
    from irforge.ops.ablation import variant_folder

    variant_folder(user.parent, user.name)  # `irforge preset --out /data` with a preset named like the user's folder


def _symlink_over(user: Path) -> None:
    owned.symlink(user / "sub", user / "notes.txt")


SITES = [_write_artifact, _write_text, _publish_dir, _leftovers, _row_cache, _join_model_parts, _served_version,
         _prune, _commit_version, _variant_folder, _symlink_over]


@pytest.mark.parametrize("site", SITES, ids=[s.__name__.strip("_") for s in SITES])
def test_every_delete_site_refuses_a_path_outside_and_leaves_it_as_it_was(site, user: Path) -> None:
    before = snapshot(user)
    with pytest.raises(NotOwnedError, match="outside the folders irforge owns|not a variant folder irforge made"):
        site(user)
    after = snapshot(user)
    # The site may have set up files of its own first (a version folder to prune): nothing that was there changed.
    assert {k: v for k, v in after.items() if k in before} == before


def test_the_guard_is_the_only_place_that_deletes_or_replaces() -> None:
    """Scan the code (library, stages, flows, benchmarks) for any delete, rename-over or link swap not made
    through irforge.contract.owned."""
    banned_calls = {("shutil", "rmtree"), ("shutil", "move"), ("os", "remove"), ("os", "unlink"), ("os", "rmdir"),
                    ("os", "replace"), ("os", "rename"), ("os", "renames"), ("os", "removedirs"), ("os", "symlink"),
                    ("tempfile", "TemporaryDirectory")}
    banned_methods = {"unlink", "rmdir", "rename", "symlink_to", "hardlink_to"}  # Path methods
    guard = REPO / "irforge" / "contract" / "owned.py"
    found = []
    for top in ("irforge", "stages", "pipelines", "benchmarks"):
        for file in sorted((REPO / top).rglob("*.py")):
            if file == guard:
                continue
            for call in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
                    continue
                owner_name = call.func.value.id if isinstance(call.func.value, ast.Name) else None
                if (owner_name, call.func.attr) in banned_calls or (
                        call.func.attr in banned_methods and owner_name not in ("owned", "writer")):
                    found.append(f"{file.relative_to(REPO)}:{call.lineno} {ast.unparse(call.func)}")
                if call.func.attr == "replace" and owner_name not in ("owned",) and len(call.args) == 1 \
                        and not call.keywords and isinstance(call.args[0], ast.Name | ast.Attribute) \
                        and "path" in ast.unparse(call.args[0]).lower():
                    found.append(f"{file.relative_to(REPO)}:{call.lineno} {ast.unparse(call.func)} (Path.replace)")
    assert not found, "delete or replace outside irforge.contract.owned:\n" + "\n".join(found)


# ---------------------------------------------------------------- the drill: a preset with absolute inputs


def _absolute_project(root: Path, user: Path) -> Project:
    """A project whose corpus folder, queries and qrels files and row cache are the user's, at absolute paths."""
    write_beir(user / "collection")
    params = tiny_params()
    params["corpus"].update(path=str(user / "collection"), queries=str(user / "collection" / "queries.jsonl"),
                            qrels=str(user / "collection" / "qrels" / "test.tsv"))
    params["runtime"]["cache_dir"] = str(user / "cache")
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    project = Project(root)
    for stage, variant in (("chunk", None), ("judgments", None), ("index", "bm25"), ("evaluate", None)):
        project.run(stage, variant)
    return project


def test_a_preset_and_an_ablation_variant_leave_absolute_inputs_byte_for_byte(tmp_path: Path, user: Path) -> None:
    from typer.testing import CliRunner

    from irforge.cli import app
    from irforge.engine import load_config
    from irforge.ops.ablation import run_variant

    project = _absolute_project(tmp_path / "project", user)
    root = project.root
    (user / "cache" / "keep.txt").parent.mkdir(parents=True, exist_ok=True)
    (user / "cache" / "keep.txt").write_text("a file of the cache's own")
    before = snapshot(user)
    # The preset of the bug report: nothing it touches reads the corpus, so the corpus was "shared" (linked).
    (root / "params-quality.yaml").write_text("evaluate.feedback.bm25-rm3: {system: bm25, method: rm3, docs: 2, "
                                              "terms: 5}\n", encoding="utf-8")
    for _ in range(2):  # the second run finds the first one's folder
        result = CliRunner().invoke(app, ["preset", str(root / "params-quality.yaml"), "--root", str(root),
                                          "--params", str(root / "params.yaml")])
        assert result.exit_code == 0, result.output
        assert snapshot(user) == before
    assert not (root / "runs/quality" / str(user).lstrip("/")).exists()  # nothing linked under the variant
    metrics = json.loads((root / "runs/quality" / paths.METRICS).read_text())
    assert "bm25-rm3" in metrics
    # The same through the ablation driver (benchmarks/ablation.py), into a folder of its own.
    row = run_variant("deep", {"evaluate.depth": 50}, root, load_config(root), root / "benchmarks/out/ablation")
    assert row["steps"] == ["evaluate", "report"] and snapshot(user) == before
    assert row["metrics"]["bm25"]["nDCG@10"] == metrics["bm25"]["nDCG@10"]


def test_a_relative_input_outside_the_project_is_read_from_the_variant_too(tmp_path: Path, user: Path) -> None:
    """corpus.path: ../collection: the variant, one folder further down, is given the absolute path instead."""
    from irforge.engine import load_config, run_stage, validate
    from irforge.ops.ablation import outside_inputs

    write_beir(user / "collection")
    base = tmp_path / "project"
    base.mkdir()
    relative = os.path.relpath(user / "collection", base)  # ../../../irforge-test-user-xyz/collection
    (base / "params.yaml").write_text(yaml.safe_dump(tiny_params(corpus=relative), sort_keys=False))
    config = load_config(base)
    fixes = outside_inputs(config, base)
    collection = (user / "collection").resolve()
    assert fixes == {"corpus.path": str(collection), "corpus.queries": str(collection / "queries.jsonl"),
                     "corpus.qrels": str(collection / "qrels" / "test.tsv")}
    before = snapshot(user)
    variant = validate(config.params.with_overrides(fixes))
    assert run_stage("chunk", base / "runs" / "v", variant)["documents"] == 6
    assert run_stage("judgments", base / "runs" / "v", variant)["judged_queries"] == 5
    assert snapshot(user) == before
