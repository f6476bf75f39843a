"""Scheduled re-indexing: change detection, incremental refresh equal to a full one, atomic switch, rollback."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from irforge.cli import app
from irforge.contract.artifacts import read_artifact
from irforge.ops import serving
from irforge.ops.refresh import diff, merge_chunks
from irforge.retrieval import BM25Retriever
from tests._ops_project import make_project


def test_diff_classifies_documents():
    changes = diff({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "changed", "d": "4"})
    assert (changes.added, changes.changed, changes.deleted, changes.unchanged) == (["d"], ["b"], ["c"], 1)
    assert changes.to_chunk == {"b", "d"} and changes.to_remove == {"b", "c"}


def test_merge_chunks_keeps_corpus_order():
    def rows(*pairs):
        return pa.table({"doc_id": [d for d, _ in pairs], "passage_index": pa.array([i for _, i in pairs], pa.int32())})

    old = rows(("a", 0), ("b", 0), ("b", 1), ("c", 0))
    new = rows(("b", 0), ("d", 0))
    merged = merge_chunks(old, new, {"b", "c"}, ["d", "a", "b"])
    assert list(zip(merged["doc_id"].to_pylist(), merged["passage_index"].to_pylist())) == [("d", 0), ("a", 0), ("b", 0)]


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _edit_corpus(root):
    path = root / "corpus/corpus.jsonl"
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    docs[3]["text"] += " The zyxwv effect was measured at supersonic speed."
    del docs[5]
    docs.append({"_id": "new-1", "title": "added later", "text": "A new report on zyxwv flutter of thin wings."})
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return docs[3]["_id"]


def _reindex(root, *args):
    result = CliRunner().invoke(app, ["reindex", "--root", str(root), "--params", str(root / "params.yaml"), *args])
    assert result.exit_code == 0, result.output
    start = result.output.index('{\n  "')  # the JSON summary, among the log lines
    return json.loads(result.output[start : result.output.index("\n}", start) + 2])


def test_reindex_refresh_switch_and_rollback(tmp_path, monkeypatch, prefect_server):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    root = make_project(tmp_path, n_docs=40)
    first = _reindex(root)
    assert (first["mode"], first["served"]) == ("full", "v000001") and first["metrics"]["nDCG@10"] > 0
    assert _reindex(root)["mode"] == "unchanged"

    edited = _edit_corpus(root)
    second = _reindex(root)
    assert second["mode"] == "incremental" and second["served"] == "v000002"
    assert second["changes"] == {"added": 1, "changed": 1, "deleted": 1, "unchanged": 38}
    assert second["rechunked_documents"] == 2
    assert serving.served_version(root, "main") == "v000002"

    # Same chunks as a full rebuild of the new corpus; the index finds the new words and lost the deleted doc.
    full = _reindex(root, "--full")
    assert full["mode"] == "full" and full["served"] == "v000003"
    versions = root / "serve/main/versions"
    assert read_artifact(versions / "v000002/artifacts/chunk/chunks.parquet", "chunks").equals(
        read_artifact(versions / "v000003/artifacts/chunk/chunks.parquet", "chunks"))
    hits = BM25Retriever(versions / "v000002/artifacts/index/bm25").search({"q": "zyxwv"}, 10)["q"]
    assert {h.split("#")[0] for h, _ in hits} == {edited, "new-1"}
    assert second["chunks"] == full["chunks"] == second["indexes"]["bm25"]["documents"]
    v1 = read_artifact(versions / "v000001/artifacts/chunk/chunks.parquet", "chunks")  # the old version is untouched
    assert v1.num_rows == first["chunks"]

    # Roll back to the version served before, then to an explicit one.
    out = CliRunner().invoke(app, ["rollback", "--root", str(root), "--params", str(root / "params.yaml")])
    assert out.exit_code == 0 and "now serving v000002" in out.output
    assert serving.served_version(root, "main") == "v000002"
    out = CliRunner().invoke(app, ["rollback", "--root", str(root), "--params", str(root / "params.yaml"), "--to", "v000001"])
    assert serving.served_version(root, "main") == "v000001" and "* v000001" in out.output


def test_an_unchanged_markdown_folder_is_unchanged_for_the_refresh(tmp_path, prefect_server):
    """A structured document's hash covers its heading paths; the refresh computes it the way the chunk stage
    does (it used to leave them out, so every Markdown file looked changed on every refresh)."""
    root = make_project(tmp_path, n_docs=8, corpus__queries=None, corpus__qrels=None, corpus__path="notes")
    for line in (root / "corpus/corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        (root / "notes").mkdir(exist_ok=True)
        (root / "notes" / f"{doc['_id']}.md").write_text(f"# {doc['title']}\n\n## Findings\n\n{doc['text']}\n")
    assert _reindex(root)["mode"] == "full"
    again = _reindex(root)
    assert again["mode"] == "unchanged" and again["changes"]["unchanged"] == 8


def test_failed_build_leaves_served_version_alone(tmp_path, monkeypatch, prefect_server):
    import irforge.ops.reindex as reindex_module  # the steps; pipelines/reindex.py only wires them as tasks

    root = make_project(tmp_path, n_docs=20)
    _reindex(root)
    _edit_corpus(root)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(reindex_module, "update_lucene_index", broken)
    result = CliRunner().invoke(app, ["reindex", "--root", str(root), "--params", str(root / "params.yaml")])
    assert result.exit_code != 0
    assert serving.served_version(root, "main") == "v000001"
    assert serving.versions(root, "main") == ["v000001"]
    assert not [p for p in (root / "serve/main/versions").iterdir() if p.name.startswith(".")]


def _drop_judged_documents(root):
    """Delete every document some query judges relevant: the next version's metrics can only fall."""
    judged = {row.split("\t")[1] for row in (root / "corpus/qrels/test.tsv").read_text().splitlines()[1:] if row}
    path = root / "corpus/corpus.jsonl"
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    kept = [d for d in docs if d["_id"] not in judged]
    assert judged and kept and len(kept) < len(docs)
    path.write_text("".join(json.dumps(d) + "\n" for d in kept))


def test_metric_gate_holds_a_worse_version(tmp_path, prefect_server):
    root = make_project(tmp_path, n_docs=20)
    first = _reindex(root)
    assert first["metrics"]["nDCG@10"] > 0
    _edit_corpus(root)
    _drop_judged_documents(root)
    # A negative allowed drop is no longer a way to hold every version: params are validated first.
    result = CliRunner().invoke(app, ["reindex", "--root", str(root), "--params", str(root / "params.yaml"),
                                      "--set", "reindex.max_metric_drop=-1"])
    assert result.exit_code != 0 and "reindex.max_metric_drop" in str(result.exception)
    assert serving.versions(root, "main") == ["v000001"]
    held = _reindex(root, "--set", "reindex.max_metric_drop=0")  # any drop at all counts as worse
    assert held["served"] == "v000001" and "fell from" in held["held"]
    assert serving.manifest(root, "main", "v000002")["held"]
    assert serving.manifest(root, "main", "v000002")["metrics"]["nDCG@10"] < first["metrics"]["nDCG@10"]


def test_one_refresh_at_a_time(tmp_path):
    with serving.exclusive(tmp_path, "bm25"), pytest.raises(serving.ServeError, match="another re-index"), \
            serving.exclusive(tmp_path, "bm25"):
        pass
    with serving.exclusive(tmp_path, "bm25"):  # released on exit
        pass


def test_without_judgments_the_gate_scores_the_held_out_generated_queries(tmp_path, prefect_server):
    """A corpus without judgments: the experiment's synthetic test set (filter.holdout rows) gates re-indexing."""
    import pyarrow as pa

    from irforge.contract import SCHEMAS, write_artifact

    root = make_project(tmp_path, n_docs=20, corpus__queries=None, corpus__qrels=None)
    docs = [json.loads(line) for line in (root / "corpus/corpus.jsonl").read_text().splitlines()]
    rows = [{"query_id": f"g{i}", "chunk_id": f"{d['_id']}#0", "doc_id": d["_id"], "text": d["title"],
             "generator": "g", "prompt_id": "p", "template": "t", "mean_logprob": -1.0, "rank_bm25": 1,
             "rank_dense": None, "kept": True, "reason": None, "holdout": i % 2 == 0} for i, d in enumerate(docs[:8])]
    write_artifact(pa.Table.from_pylist(rows, SCHEMAS["filtered_queries"]), root / "artifacts/filter/queries.parquet",
                   "filtered_queries", {"stage": "test"})
    first = _reindex(root)
    assert first["metrics"]["synthetic_queries"] == 4 and first["metrics"]["nDCG@10"] > 0
    held_docs = {r["doc_id"] for r in rows if r["holdout"]}
    path = root / "corpus/corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs if d["_id"] not in held_docs))
    held = _reindex(root, "--set", "reindex.max_metric_drop=0")
    assert held["served"] == first["served"] and "fell from" in held["held"]


def test_a_corpus_too_bad_to_reindex_is_a_short_error_naming_the_bad_lines(tmp_path, prefect_server):
    root = make_project(tmp_path, n_docs=10)
    path = root / "corpus/corpus.jsonl"
    path.write_text(path.read_text() + "not json\n" * 3)
    result = CliRunner().invoke(app, ["reindex", "--root", str(root), "--params", str(root / "params.yaml")])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "corpus: 3 of 13 rows are bad, above chunk.max_bad_fraction=0.01 (corpus.jsonl:11 invalid JSON" in message
    assert "Traceback" not in result.output


@pytest.mark.slow  # three builds of three indexes with evaluation: ~90 s on 2 cores
def test_a_hybrid_served_system_refreshes_every_index_by_the_change(tmp_path, tiny_models):
    """bm25 + faiss + SPLADE impact fused: the incremental refresh encodes only new chunks, and every query's top 10
    equals a full rebuild's; the three indexes switch together (one version)."""
    from irforge.engine import load_config
    from irforge.ops import reindex as steps
    from irforge.ops.search import SearchService

    root = make_project(tmp_path, n_docs=30, index__max_length=32, evaluate__systems=["bm25", "dense-zs", "splade-zs"],
                       evaluate__fusions=[["bm25", "dense-zs", "splade-zs"]], index__systems={
                           "bm25": {"kind": "bm25"}, "dense-zs": {"kind": "faiss", "model": str(tiny_models["dense"])},
                           "splade-zs": {"kind": "impact", "model": str(tiny_models["splade"])}})
    config = load_config(root, "params.yaml", {"serve.system": "rrf(bm25+dense-zs+splade-zs)"})

    def refresh(full=False):
        p = steps.plan(root, config, full=full)
        version, folder = serving.begin_version(root, "main")
        stats = steps.build(root, config, p, folder)
        steps.commit(root, config, p, version, folder, stats, steps.evaluate(root, config, folder))
        steps.serve_version(root, config, "main", version, None)
        return p, stats

    p, first = refresh()
    assert p.mode == "full" and set(first["indexes"]) == {"bm25", "dense-zs", "splade-zs"}
    _edit_corpus(root)
    p, second = refresh()
    assert p.mode == "incremental" and second["new_chunks"] > 0
    dense = second["indexes"]["dense-zs"]
    # Only re-chunked text is encoded (a changed document's untouched first chunk is still in the cache).
    assert 0 < dense["encoded"] <= second["new_chunks"] and dense["from_cache"] + dense["encoded"] == second["chunks"]
    assert second["indexes"]["splade-zs"]["added"] == second["new_chunks"] == second["indexes"]["bm25"]["added"]
    assert serving.manifest(root, "main", "v000002")["metrics"]["nDCG@10"] > 0
    refresh(full=True)

    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (root / "corpus/queries.jsonl").read_text().splitlines()}
    queries["new"] = "zyxwv flutter"

    def top10(version):
        service = SearchService.open_version(root / "serve/main/versions" / version, root / ".irforge-cache", threads=1)
        try:
            return {q: [h["doc_id"] for h in hits] for q, hits in service.search(queries, k=10).items()}
        finally:
            service.close()

    incremental, full = top10("v000002"), top10("v000003")
    same = sum(incremental[q] == full[q] for q in queries) / len(queries)
    assert same >= 0.95, f"only {same:.0%} of queries have the full rebuild's top 10"
    assert "new-1" in incremental["new"][:3]
