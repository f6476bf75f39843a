"""`irforge audit --validate`: every artifact of a run checked; violations named, exit code 1."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import paths
from irforge.cli import app
from irforge.contract.artifacts import write_artifact
from irforge.contract.schemas import SCHEMAS
from irforge.engine import load_config, run_stage
from irforge.ops.validate import validate_run
from tests._ops_project import make_project


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny project after chunk, judgments -> index bm25 -> evaluate."""
    root = make_project(tmp_path_factory.mktemp("audit"), n_docs=30)
    config = load_config(root)
    run_stage("chunk", root, config)
    run_stage("judgments", root, config)
    run_stage("index", root, config, "bm25")
    run_stage("evaluate", root, config)
    return root


def audit(root, *args):
    return CliRunner().invoke(app, ["audit", "--root", str(root), "--params", str(root / "params.yaml"), *args])


def test_clean_run_passes_and_skips_missing_stages(built, tmp_path):
    result = audit(built, "--validate", "--html", str(tmp_path / "audit.html"))
    assert result.exit_code == 0, result.output
    assert "no violations" in result.output
    assert "ok   artifacts/chunk/chunks.parquet" in result.output
    assert "ok   artifacts/judgments/qrels.parquet" in result.output
    assert "skip evaluation-query leakage" in result.output  # no training artifact yet: skipped, not failed
    assert "no violations" in (tmp_path / "audit.html").read_text()


def test_lineage_reaches_the_corpus(built):
    result = audit(built, "artifacts/evaluate/runs.parquet")
    assert result.exit_code == 0, result.output
    assert "corpus/corpus.jsonl  [raw input]" in result.output and "stage chunk v" in result.output
    assert "model: pkg:all-minilm-l6-v2" in result.output


def test_no_artifacts_yet_is_not_a_failure(tmp_path):
    root = make_project(tmp_path)
    report = validate_run(root, load_config(root))
    assert report.ok and any("no artifacts" in s for s in report.skipped)


def _chunk_ids(root):
    import pyarrow.parquet as pq

    return pq.read_table(root / paths.CHUNKS).column("chunk_id").to_pylist()


def test_referential_integrity_and_leakage_are_reported(built, tmp_path):
    import shutil

    root = tmp_path / "p"
    shutil.copytree(built, root)
    ids = _chunk_ids(root)
    eval_query = json.loads((root / "corpus/queries.jsonl").read_text().splitlines()[0])
    prov = {"stage": "test", "stage_version": "1", "params": {}, "params_hash": "", "inputs": [], "created_at": ""}
    queries = [dict(query_id=f"g{i}", chunk_id=c, doc_id=c.split("#")[0], text=f"question {i}", generator="g",
                    model_hash="h", prompt_id="p", template="t", seed=1, mean_logprob=-1.0, kept=True, reason=None)
               for i, c in enumerate(ids[:3])]
    queries[1]["text"] = "  " + eval_query["text"].upper() + " "  # an evaluation query, disguised
    queries[2]["chunk_id"] = "ghost#0"
    # Dropped rows never reach training: an evaluation query among them is not a leak.
    queries.append(dict(queries[0], query_id="g3", text=eval_query["text"], kept=False, reason="too_long"))
    write_artifact(pa.Table.from_pylist(queries, SCHEMAS["generated_queries"]), root / paths.SYNTHETIC, "generated_queries", prov)
    # An expansion in an evaluated index that nearly repeats one (all its words but one extra: Jaccard >= 0.8).
    near = eval_query["text"].rstrip(" .") + " indeed"
    expanded = [dict(chunk_id=ids[0], doc_id=ids[0].split("#")[0], title="", text="x", expansion=f"fine query\n{near}")]
    write_artifact(pa.Table.from_pylist(expanded, SCHEMAS["expanded_chunks"]), root / paths.EXPANDED, "expanded_chunks", prov)
    neg = lambda c: {"chunk_id": c, "rank": 5, "score": 1.0, "source": "bm25"}  # noqa: E731
    triples = [dict(query_id="g0", query="question 0", positive_id=ids[0], generator="g", template="t",
                    negatives=[neg(ids[1]), neg(ids[0])]),
               dict(query_id="g1", query="q", positive_id=ids[1], generator="g", template="t", negatives=[neg("nope#3")])]
    write_artifact(pa.Table.from_pylist(triples, SCHEMAS["triples"]), root / paths.TRIPLES, "triples", prov)

    result = audit(root, "--validate")
    assert result.exit_code == 1
    out = result.output
    assert ("artifacts/synthesize/queries.parquet: [leakage] 1 row(s) that reach training or an index repeat an "
            "evaluation query") in out
    assert f"g1 -> {eval_query['_id']} (word jaccard 1.00)" in out and "g3 ->" not in out
    assert "artifacts/doc2query/expanded.parquet: [leakage] 1 row(s)" in out and f"{ids[0]} -> {eval_query['_id']}" in out
    assert "artifacts/synthesize/queries.parquet: [references] 1 chunk id(s) not in" in out and "'ghost#0'" in out
    assert "[references] 1 triple(s) use the positive as a negative: 'g0'" in out
    assert "[references] 1 negative(s) not in" in out and "'nope#3'" in out


def test_changed_input_is_reported(built, tmp_path):
    import shutil

    root = tmp_path / "p"
    shutil.copytree(built, root)
    with open(root / "corpus/corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "extra", "title": "", "text": "a late addition"}) + "\n")
    report = validate_run(root, load_config(root))
    assert not report.ok
    assert any(v.artifact == paths.CHUNKS and "corpus/corpus.jsonl changed since recorded" in v.message
               for v in report.violations)


def _killed_at(root, point: str, *stage: str) -> None:
    """`irforge run STAGE` in a child process that SIGKILLs itself at failpoint ``point`` (irforge.contract.failpoints)."""
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ, IRFORGE_FAILPOINT=point, IRFORGE_PROGRESS="0")
    done = subprocess.run([sys.executable, "-m", "irforge", "run", *stage, "--root", str(root), "--params",
                           str(root / "params.yaml")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_outputs_of_two_runs_of_one_stage_are_flagged(built, tmp_path):
    """kill -9 between two writes of one stage run (chunk writes its quarantine, then its chunks) leaves outputs
    of two runs side by side: audit says which and why, and the next run mends it."""
    import shutil

    root = tmp_path / "p"
    shutil.copytree(built, root)
    old_chunks, old_quarantine = (root / paths.CHUNKS).read_bytes(), (root / paths.QUARANTINE).read_bytes()
    with open(root / "corpus/corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "late", "title": "", "text": "A late document about wings."}) + "\n")
    _killed_at(root, f"after-output:{paths.QUARANTINE}", "chunk")
    assert (root / paths.QUARANTINE).read_bytes() != old_quarantine  # the quarantine is the new run's,
    assert (root / paths.CHUNKS).read_bytes() == old_chunks  # the chunks still the old run's
    out = audit(root, "--validate").output
    assert ("[run] written by another run of stage chunk than artifacts/chunk/chunks.parquet (they differ in "
            "corpus/corpus.jsonl)") in out
    run_stage("chunk", root, load_config(root))
    assert "[run]" not in audit(root, "--validate").output


def test_a_publish_killed_between_its_renames_is_restored_not_deleted(built, tmp_path):
    """kill -9 between the two renames of a folder publish (systems without an atomic folder swap): only the
    previous version is left, set aside. Audit says not to delete it; the next publish puts it back first."""
    import shutil

    from irforge.contract.artifacts import _remove_leftovers, sha256_path

    root = tmp_path / "p"
    shutil.copytree(built, root)
    index = root / paths.index_dir("bm25")
    before = sha256_path(index)
    _killed_at(root, "no-exchange,publish-between-renames", "index", "bm25")
    asides = list(index.parent.glob(".bm25.old-*"))
    assert not index.exists() and len(asides) == 1 and sha256_path(asides[0]) == before
    out = audit(root, "--validate").output
    assert f"{paths.index_dir('bm25')}: [leftover] missing; its previous version is " in out and "do not delete" in out
    _remove_leftovers(index)
    assert index.is_dir() and not asides[0].exists() and sha256_path(index) == before
    assert "no violations" in audit(root, "--validate").output


def test_a_corrupt_json_artifact_is_named(built, tmp_path):
    import shutil

    root = tmp_path / "p"
    shutil.copytree(built, root)
    (root / paths.METRICS).write_text('{"bm25": {"nDCG@10": 0.5', encoding="utf-8")  # cut short
    result = audit(root, "--validate")
    assert result.exit_code == 1 and f"{paths.METRICS}: [readable] not valid JSON" in result.output


def test_a_test_query_shown_as_a_few_shot_example_is_a_violation(built, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    from irforge.corpus import queries_of, splits_of

    root = tmp_path / "p"
    shutil.copytree(built, root)
    judged = pq.read_table(root / paths.QUERIES)
    splits, texts = splits_of(judged), queries_of(judged)
    dev = next(q for q, s in splits.items() if s == "dev")
    test = next(q for q, s in splits.items() if s == "test")
    metrics = root / paths.SYNTHETIC_METRICS
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"examples": [{"query_id": dev, "query": texts[dev]}]}))
    result = audit(root, "--validate")
    assert result.exit_code == 0 and "no violations" in result.output, result.output  # dev examples are allowed
    # a test query's text under no id (a user's JSONL file) is caught as surely as its id
    metrics.write_text(json.dumps({"examples": [{"query_id": dev, "query": texts[dev]},
                                                {"query_id": None, "query": texts[test].upper() + "?"}]}))
    result = audit(root, "--validate")
    assert result.exit_code == 1
    assert f"{paths.SYNTHETIC_METRICS}: [examples]" in result.output and f"evaluation query '{test}'" in result.output
