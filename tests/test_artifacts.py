"""The artifact contract: schema checks with messages that name the file and column, and atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from irforge.contract import artifacts
from irforge.contract.artifacts import ArtifactError, publish_dir, read_artifact, read_provenance, write_artifact
from irforge.contract.schemas import SCHEMAS

PROV = {"stage": "test", "stage_version": "1"}


def run_rows(n: int = 3, system: str = "bm25") -> list[dict]:
    return [{"system": system, "query_id": f"q{i}", "doc_id": f"d{i}", "rank": 1, "score": float(i)} for i in range(n)]


def run_table(n: int = 3, system: str = "bm25") -> pa.Table:
    return pa.Table.from_pylist(run_rows(n, system), schema=SCHEMAS["run"])


# ---------------------------------------------------------------- schema validation


def test_round_trip_keeps_rows_and_stamps_provenance(tmp_path: Path) -> None:
    path = write_artifact(run_table(), tmp_path / "run.parquet", "run", PROV)
    assert read_artifact(path, "run").to_pylist() == run_rows()
    assert read_provenance(path) == {**PROV, "artifact": "run", "rows": 3}


def test_columns_are_reordered_to_the_schema(tmp_path: Path) -> None:
    table = run_table().select(["score", "rank", "doc_id", "query_id", "system"])
    path = write_artifact(table, tmp_path / "run.parquet", "run", PROV)
    assert pq.read_schema(path).names == SCHEMAS["run"].names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["doc_id"]), "artifact 'run' is missing column 'doc_id'"),
        (lambda t: t.drop_columns(["doc_id", "rank"]), "artifact 'run' is missing column 'doc_id' (and 1 more: rank)"),
        (lambda t: t.append_column("extra", pa.array([1, 2, 3])), "artifact 'run' has unexpected column 'extra'"),
        (lambda t: t.set_column(3, "rank", pa.array([1, 2, 3], pa.int64())),
         "artifact 'run', column 'rank': expected type int32, found int64"),
        (lambda t: t.set_column(2, pa.field("doc_id", pa.string()), pa.array(["d0", None, None])),
         "artifact 'run', column 'doc_id': 2 null value(s), first at row 1; the column is required"),
    ],
    ids=["missing", "missing-two", "extra", "wrong-type", "null"],
)
def test_schema_violations_name_the_artifact_and_column(tmp_path: Path, change, message: str) -> None:
    bad = change(run_table())
    target = tmp_path / "run.parquet"
    with pytest.raises(ArtifactError) as err:
        write_artifact(bad, target, "run", PROV)
    assert str(err.value) == f"{target}: {message}"
    assert not target.exists()
    # The same table written behind irforge's back is refused on read, with the same message.
    pq.write_table(bad, target)
    with pytest.raises(ArtifactError) as err:
        read_artifact(target, "run")
    assert str(err.value) == f"{target}: {message}"


def test_nullable_column_accepts_nulls(tmp_path: Path) -> None:
    rows = [{"source": "c.jsonl", "line": 1, "doc_id": None, "field": None, "reason": "bad", "raw": None}]
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["quarantine"])
    assert read_artifact(write_artifact(table, tmp_path / "q.parquet", "quarantine", PROV), "quarantine").num_rows == 1


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"q.parquet: unknown artifact kind 'nope' \(known: .*chunks.*\)"):
        write_artifact(run_table(), tmp_path / "q.parquet", "nope", PROV)


def test_reading_a_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "chunks.parquet"
    path.write_text('{"chunk_id": "a#0"}\n')
    with pytest.raises(ArtifactError, match=rf"^{path}: not a readable Parquet file \(.+\)$"):
        read_artifact(path, "chunks")
    with pytest.raises(ArtifactError, match=rf"^{path}: not a readable Parquet file"):
        read_provenance(path)


def test_reading_a_missing_artifact(tmp_path: Path) -> None:
    path = tmp_path / "chunks.parquet"
    with pytest.raises(ArtifactError, match=rf"^{path}: artifact 'chunks' not found; run the stage that produces it"):
        read_artifact(path, "chunks")


def test_text_file_gets_a_provenance_sidecar(tmp_path: Path) -> None:
    path = artifacts.write_text_atomic(tmp_path / "metrics.json", "{}\n", PROV)
    assert path.read_text() == "{}\n"
    assert read_provenance(path) == {**PROV, "artifact": "file"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "metrics.json.provenance.json"]


# ---------------------------------------------------------------- atomic writes


def test_failed_write_keeps_the_previous_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_artifact(run_table(3), tmp_path / "run.parquet", "run", PROV)
    before = target.read_bytes()

    def half_then_crash(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.pq, "write_table", half_then_crash)
    with pytest.raises(artifacts.ArtifactError, match=r"run.parquet: could not be written \(disk full\)"):
        write_artifact(run_table(10), target, "run", PROV)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.parquet"]


def _killed_writer(code: str, tmp_path: Path) -> None:
    """Run ``code`` in a fresh interpreter until it prints READY, then SIGKILL it (a crash, no clean-up)."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_write_keeps_the_previous_artifact_and_the_next_write_cleans_up(tmp_path: Path) -> None:
    target = write_artifact(run_table(3), tmp_path / "run.parquet", "run", PROV)
    before = target.read_bytes()
    # The writer is killed after its big temporary file is complete and before the rename: the worst moment.
    _killed_writer(
        f"""
        import sys, time
        import pyarrow as pa
        from irforge.contract import artifacts, owned
        owned.claim({str(tmp_path)!r})
        from irforge.contract.schemas import SCHEMAS

        def stop(path):
            print("READY", flush=True)
            time.sleep(600)

        artifacts._fsync = stop
        n = 500_000
        table = pa.table({{"system": ["bm25"] * n, "query_id": [f"q{{i}}" for i in range(n)],
                          "doc_id": [f"d{{i}}" for i in range(n)], "rank": pa.array(range(n), pa.int32()),
                          "score": pa.array(range(n), pa.float64())}}, schema=SCHEMAS["run"])
        artifacts.write_artifact(table, {str(target)!r}, "run", {{}})
        """,
        tmp_path,
    )
    assert target.read_bytes() == before
    assert read_artifact(target, "run").num_rows == 3
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".run.parquet.tmp-")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 1_000_000
    write_artifact(run_table(5), target, "run", PROV)
    assert read_artifact(target, "run").num_rows == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.parquet", "writer.py"]


def test_publish_dir_swaps_the_folder_in_with_its_provenance(tmp_path: Path) -> None:
    target = tmp_path / "index" / "bm25"
    with publish_dir(target, lambda: PROV) as tmp:
        (tmp / "data").write_text("new")
        assert not target.exists()
    assert (target / "data").read_text() == "new"
    assert read_provenance(target) == {**PROV, "artifact": "folder"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["bm25"]


def test_publish_dir_error_keeps_the_previous_folder(tmp_path: Path) -> None:
    target = tmp_path / "bm25"
    with publish_dir(target, PROV) as tmp:
        (tmp / "data").write_text("old")
    with pytest.raises(RuntimeError, match="indexer crashed"), publish_dir(target, PROV) as tmp:
        (tmp / "data").write_text("half of the new one")
        raise RuntimeError("indexer crashed")
    assert (target / "data").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]


def test_killed_publish_dir_keeps_the_previous_folder_and_the_next_one_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "bm25"
    with publish_dir(target, PROV) as tmp:
        (tmp / "data").write_text("old")
    _killed_writer(
        f"""
        import time
        from irforge.contract.artifacts import publish_dir
        from irforge.contract import owned
        owned.claim({str(tmp_path)!r})

        with publish_dir({str(target)!r}, {{}}) as tmp:
            (tmp / "data").write_text("half of the new one")
            print("READY", flush=True)
            time.sleep(600)
        """,
        tmp_path,
    )
    assert (target / "data").read_text() == "old"
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".bm25.tmp-")]) == 1
    with publish_dir(target, PROV) as tmp:
        (tmp / "data").write_text("new")
    assert (target / "data").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25", "writer.py"]
