"""Reliability drills: a stage killed mid-write leaves the previous artifact intact and a rerun completes;
a corrupted Parquet file is named by `irforge audit --validate`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

import paths
from irforge.cli import app
from irforge.contract.artifacts import read_artifact, sha256_path
from irforge.engine import load_config, run_stage
from irforge.ops.validate import validate_run
from tests._ops_project import REPO, make_project

# Writes a chunks artifact of N rows through the chunk stage's own context (the stage's declared output,
# written by name), as the stage does (atomic temp file + rename).
WRITER = """
import sys
from pathlib import Path
import pyarrow as pa
from irforge.config import Params
from irforge.engine import StageContext, validate
from irforge.engine.dag import node

root, n = Path(sys.argv[1]), int(sys.argv[2])
ids = pa.array([f"d{i}#0" for i in range(n)])
docs = pa.array([f"d{i}" for i in range(n)])
text = pa.array([f"row {i} " + "lorem ipsum dolor sit amet " * 8 for i in range(n)])
zero = pa.array([0] * n, pa.int32())
table = pa.table({"chunk_id": ids, "doc_id": docs, "passage_index": zero, "title": docs, "text": text,
                  "char_start": zero, "char_end": zero, "n_tokens": zero, "content_hash": ids, "doc_hash": ids,
                  "section": pa.nulls(n, pa.string())})
config = validate(Params({}))  # every section at its defaults
ctx = StageContext(node(config, "chunk"), root, config)
assert ctx.output_path("chunks") == root / "artifacts/chunk/chunks.parquet"
print("writing", flush=True)
ctx.write("chunks", table)
print("done", flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "IRFORGE_PROGRESS": "0"}


def _kill_when(proc: subprocess.Popen, appeared, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not appeared():
        assert proc.poll() is None, "the process finished before it could be killed mid-write"
        assert time.monotonic() < deadline, "the write never started"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_during_parquet_write_keeps_previous_artifact(tmp_path):
    target = tmp_path / paths.CHUNKS
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), "10"], check=True, env=_env())
    before = sha256_path(target)

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "1500000"], env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    _kill_when(proc, lambda: any(p.stat().st_size > 0 for p in target.parent.glob(".chunks.parquet.tmp-*")))

    assert proc.returncode == -signal.SIGKILL
    assert sha256_path(target) == before and read_artifact(target, "chunks").num_rows == 10
    assert list(target.parent.glob(".chunks.parquet.tmp-*")), "the half-written temp file is left beside it"
    project = make_project(tmp_path / "p")
    report = validate_run(project, load_config(project))  # validate must not trip over a leftover elsewhere
    assert report.ok

    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), "1000"], check=True, env=_env())
    assert read_artifact(target, "chunks").num_rows == 1000


@pytest.fixture
def indexed(tmp_path):
    root = make_project(tmp_path / "p", n_docs=30)
    config = load_config(root)
    run_stage("chunk", root, config)
    run_stage("judgments", root, config)
    run_stage("index", root, config, "bm25")
    run_stage("evaluate", root, config)
    return root


def test_kill_during_index_build_keeps_previous_index(indexed):
    index = indexed / paths.index_dir("bm25")
    before = sha256_path(index)
    proc = subprocess.Popen([sys.executable, "-m", "irforge", "run", "index", "bm25", "--root", str(indexed),
                             "--params", str(indexed / "params.yaml")], env=_env(), stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: any(index.parent.glob(".bm25.tmp-*")))
    assert sha256_path(index) == before
    report = validate_run(indexed, load_config(indexed))
    assert report.ok, report.violations
    assert any(".bm25.tmp-" in w.artifact for w in report.warnings)

    rerun = subprocess.run([sys.executable, "-m", "irforge", "run", "index", "bm25", "--root", str(indexed),
                            "--params", str(indexed / "params.yaml")], env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert any(index.glob("segments_*"))


def test_corrupt_parquet_is_named_by_audit(indexed):
    victim = indexed / "artifacts/evaluate/per_query.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # scribble over the middle
    data[-8:] = b"\x00" * 8  # and the footer
    victim.write_bytes(bytes(data))

    result = CliRunner().invoke(app, ["audit", "--validate", "--root", str(indexed), "--params", str(indexed / "params.yaml")])
    assert result.exit_code == 1
    assert "FAIL artifacts/evaluate/per_query.parquet" in result.output
    assert "artifacts/evaluate/per_query.parquet: [readable]" in result.output
    assert "ok   artifacts/chunk/chunks.parquet" in result.output


def test_a_second_run_of_a_running_stage_is_refused_with_its_pid(tmp_path) -> None:
    """Two `irforge run chunk` in one folder would delete each other's temp files: the second one is refused."""
    import os

    import pytest

    from irforge.engine.runner import StageBusyError, stage_lock
    from tests._ops_project import make_project

    root = make_project(tmp_path, n_docs=5)
    config = load_config(root)
    with stage_lock(root, "chunk"), pytest.raises(StageBusyError, match=rf"stage chunk is already running .* \(pid {os.getpid()};"):
        run_stage("chunk", root, config)
    assert not (root / "artifacts/chunk/chunks.parquet").exists()
    with stage_lock(root, "index-bm25"):  # another stage may run meanwhile
        run_stage("chunk", root, config)
    assert (root / "artifacts/chunk/chunks.parquet").exists()


def test_a_full_disk_is_one_line_naming_the_artifact_and_the_old_one_stays(tmp_path, monkeypatch) -> None:
    import errno

    import pyarrow.parquet as pq

    from irforge.cli import describe_error
    from irforge.contract import ArtifactError

    root = make_project(tmp_path, n_docs=5)
    config = load_config(root)
    run_stage("chunk", root, config)
    before = (root / paths.CHUNKS).read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(ArtifactError) as caught:
        run_stage("chunk", root, config)
    message = describe_error(caught.value)
    assert message.startswith(str(root / "artifacts/chunk/")) and "could not be written (No space left on device)" in message
    assert "\n" not in message and (root / paths.CHUNKS).read_bytes() == before
    assert not [p for p in (root / "artifacts/chunk").iterdir() if ".tmp-" in p.name]


def test_a_lucene_build_that_cannot_write_is_one_line_naming_the_folder(tmp_path) -> None:
    from irforge.cli import describe_error
    from irforge.retrieval.lucene import IndexBuildError, build_lucene_index

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(IndexBuildError) as caught:  # Java's FileSystemException, not a pyjnius stack trace
        build_lucene_index([("d1", "flat plate boundary layer")], tmp_path / "a-file" / "index", threads=1)
    message = describe_error(caught.value)
    assert message.startswith(f"{tmp_path / 'a-file' / 'index'}: Lucene could not build the index: ")
    assert "Not a directory" in message and "\n" not in message


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at ``artifacts/index`` of a project (needs root with CAP_SYS_ADMIN; skipped elsewhere)."""
    root = make_project(tmp_path / "project", n_docs=20)
    folder = root / "artifacts" / "index"
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_lucene_on_a_full_disk_is_one_line_and_the_previous_index_stays(small_disk) -> None:
    """Anserini logs a failed write and carries on; the build checks the index it wrote and says so."""
    from irforge.cli import describe_error
    from irforge.retrieval.lucene import IndexBuildError

    root = small_disk
    config = load_config(root)
    run_stage("chunk", root, config)
    run_stage("index", root, config, "bm25")
    index = root / "artifacts/index/bm25"
    before = sha256_path(index)
    filler = root / "artifacts/index/filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk but for a few KiB: the next build cannot finish
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    with pytest.raises(IndexBuildError) as caught:
        run_stage("index", root, config, "bm25")
    message = describe_error(caught.value)
    assert message.startswith(str(root / "artifacts/index/")) and "\n" not in message
    assert "Lucene" in message and "full?" in message
    assert sha256_path(index) == before  # the served index is the previous one, whole
    assert sorted(p.name for p in (root / "artifacts/index").iterdir()) == ["bm25", "filler"]  # no temp folder left
