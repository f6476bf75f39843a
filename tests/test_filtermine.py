"""filter + mine + the shared dense encoder, on a tiny corpus and a tiny random BERT built in the test."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import paths
from irforge.config import Params
from irforge.contract import SCHEMAS, read_artifact, write_artifact
from irforge.engine import run_stage

REPO = Path(__file__).resolve().parents[1]
N_DOCS = 30
COMMON = ["flow", "wing", "pressure", "layer", "shock", "heat", "speed", "boundary", "plate", "surface"]


def _doc_words(d: int) -> list[str]:
    """Each document has two words of its own plus common words in varying amounts (graded BM25 scores)."""
    rng = random.Random(d)
    return [f"topic{d}a", f"topic{d}b"] + [rng.choice(COMMON) for _ in range(6 + d % 7)]


def _chunks() -> list[dict]:
    rows = []
    for d in range(N_DOCS):
        words = _doc_words(d)
        for p in range(2):  # two chunks per document: same-document exclusion matters
            text = " ".join(words + [f"part{d}x{p}"]) + "."
            title = f"document {d}"
            rows.append({
                "chunk_id": f"d{d}#{p}", "doc_id": f"d{d}", "passage_index": p, "title": title, "text": text,
                "char_start": 0, "char_end": len(text), "n_tokens": len(text.split()),
                "content_hash": hashlib.sha256(f"{title}\x1f{text}".encode()).hexdigest(), "doc_hash": f"h{d}",
            })
    return rows


def _query(qid: str, chunk_id: str, text: str, template: str = "t1", logprob: float = -1.0, kept: bool = True,
           reason: str | None = None) -> dict:
    return {"query_id": qid, "chunk_id": chunk_id, "doc_id": chunk_id.split("#")[0], "text": text,
            "generator": "gen-a", "model_hash": "m", "prompt_id": f"{template}-abc", "template": template,
            "seed": 0, "mean_logprob": logprob, "kept": kept, "reason": reason}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from irforge.models import resolve_model

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("pkg:all-minilm-l6-v2").path))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> Path:
    """A project folder with chunks, a BM25 index and evaluation queries (the judgments stage's ``queries``
    artifact, which the filter's leakage guard reads), built once per module."""
    root = tmp_path_factory.mktemp("project")
    write_artifact(pa.Table.from_pylist(_chunks(), SCHEMAS["chunks"]), root / paths.CHUNKS, "chunks",
                   {"stage": "test"})
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in [
        {"_id": "7", "text": "What is the effect of topic3a on shock waves?"},
        {"_id": "8", "text": "heat transfer in a laminar boundary layer of a flat plate near the leading edge"},
    ]) + "\n")
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n7\td3\t1\n8\td8\t1\n")
    run_stage("judgments", root, _params(root, None))
    run_stage("index", root, _params(root, None), "bm25")
    return root


def _params(root: Path, model: Path | None, **overrides) -> Params:
    base = Params.load(REPO / "params.yaml")
    values = {
        "corpus.queries": "queries.jsonl", "corpus.qrels": "qrels.tsv", "encoder.model": str(model or "unused"),
        "runtime.threads": 1, "encoder.max_length": 64, "encoder.precision": "float32",
        "filter.retrievers": ["bm25"], "filter.too_easy": {"enabled": False}, "mine.retrievers": ["bm25"],
        "leakage": {"jaccard": 0.8, "cosine": None}, "mine.false_negative_ratio": None,
    }
    values.update(overrides)
    return base.with_overrides(values)


def _project(corpus_root: Path, tmp_path: Path, rows: list[dict]) -> Path:
    root = tmp_path / "p"
    shutil.copytree(corpus_root, root)
    # The filter reads generated queries by artifact name: `synthetic_queries` (filter.sources: [synthesize]).
    write_artifact(pa.Table.from_pylist(rows, SCHEMAS["generated_queries"]), root / paths.SYNTHETIC,
                   "generated_queries", {"stage": "test"})
    return root


def _filtered(root: Path) -> dict[str, dict]:
    return {r["query_id"]: r for r in read_artifact(root / paths.FILTERED, "filtered_queries").to_pylist()}


# ---------------------------------------------------------------- filter


def test_round_trip_keeps_first_ranked_source_and_drops_absent_one(corpus_root, tmp_path):
    rows = [
        _query("good", "d4#0", "topic4a topic4b part4x0"),
        _query("absent", "d4#0", "topic9a topic9b"),  # the words of another document only
        _query("cleaned", "d5#0", "x", kept=False, reason="too short"),
        _query("orphan", "d99#0", "topic5a"),
    ]
    root = _project(corpus_root, tmp_path, rows)
    summary = run_stage("filter", root, _params(root, None, **{"filter.k": 3}))
    out = _filtered(root)
    assert out["good"]["kept"] and out["good"]["reason"] is None and out["good"]["rank_bm25"] == 1
    assert not out["absent"]["kept"] and out["absent"]["reason"].startswith("round_trip")
    assert out["absent"]["rank_bm25"] is None and out["good"]["rank_dense"] is None  # dense not used
    assert out["cleaned"]["reason"] == "cleaning: too short"
    assert out["orphan"]["reason"].startswith("unknown_chunk")
    assert summary["rejected"]["round_trip"] == 1 and summary["kept"] == 1
    metrics = json.loads((root / paths.FILTER_METRICS).read_text())["filter"]
    assert metrics["by_generator"]["gen-a"] == {"input": 4, "kept": 1, "pass_rate": 0.25}


def test_round_trip_off_keeps_the_absent_source_but_still_records_its_rank(corpus_root, tmp_path):
    rows = [_query("absent", "d4#0", "topic9a topic9b"), _query("cleaned", "d5#0", "x", kept=False, reason="too short")]
    root = _project(corpus_root, tmp_path, rows)
    run_stage("filter", root, _params(root, None, **{"filter.k": 3, "filter.round_trip": False}))
    out = _filtered(root)
    assert out["absent"]["kept"] and out["absent"]["rank_bm25"] is None
    assert out["cleaned"]["reason"] == "cleaning: too short"  # the other rules still apply


def test_too_easy_rejects_landslide_wins_only(corpus_root, tmp_path):
    rows = [
        _query("landslide", "d4#0", "topic4a topic4b part4x0"),  # only d4 has these words
        _query("contested", "d4#0", "topic4a flow wing pressure layer shock heat"),  # common words compete
    ]
    root = _project(corpus_root, tmp_path, rows)
    run_stage("filter", root, _params(root, None, **{
        "filter.too_easy": {"enabled": True, "retriever": "bm25", "margin": 0.5}}))
    out = _filtered(root)
    assert out["landslide"]["rank_bm25"] == 1 and out["landslide"]["reason"].startswith("too_easy")
    assert out["contested"]["rank_bm25"] == 1 and out["contested"]["kept"]


def test_leakage_guard_catches_evaluation_queries(corpus_root, tmp_path):
    rows = [
        _query("copy", "d3#0", "what is the EFFECT of topic3a on shock-waves"),  # same words, other case/punctuation
        _query("near", "d8#0", "heat transfer in a laminar boundary layer of a flat plate near the trailing edge"),
        _query("fresh", "d3#0", "topic3a topic3b"),
    ]
    root = _project(corpus_root, tmp_path, rows)
    run_stage("filter", root, _params(root, None))
    out = _filtered(root)
    assert out["copy"]["reason"].startswith("leakage: eval query 7")
    assert out["near"]["reason"].startswith("leakage: eval query 8")
    assert out["fresh"]["kept"]


def test_score_filter_keeps_top_fraction_per_template(corpus_root, tmp_path):
    rows = [_query(f"a{i}", f"d{i}#0", f"topic{i}a topic{i}b", "t1", logprob=-i) for i in range(4)]
    rows += [_query(f"b{i}", f"d{i}#1", f"topic{i}a part{i}x1", "t2", logprob=-10 - i) for i in range(2)]
    root = _project(corpus_root, tmp_path, rows)
    run_stage("filter", root, _params(root, None, **{"filter.keep_fraction": 0.5, "filter.fraction_per": "template"}))
    out = _filtered(root)
    assert [q for q, r in sorted(out.items()) if r["kept"]] == ["a0", "a1", "b0"]
    assert out["a3"]["reason"].startswith("low_score")


def test_filter_reads_every_source_by_artifact_name(corpus_root, tmp_path):
    """filter.sources picks the generated-query artifacts: synthesize -> synthetic_queries, doc2query ->
    doc2query_queries; a source whose artifact was never written is an error naming it."""
    from irforge.contract import ArtifactError

    root = _project(corpus_root, tmp_path, [_query("syn", "d4#0", "topic4a topic4b part4x0")])
    with pytest.raises(ArtifactError, match="doc2query"):
        run_stage("filter", root, _params(root, None, **{"filter.sources": ["synthesize", "doc2query"]}))
    write_artifact(pa.Table.from_pylist([_query("d2q", "d5#0", "topic5a topic5b part5x0", "doc2query")],
                                        SCHEMAS["generated_queries"]), root / paths.DOC2QUERY,
                   "generated_queries", {"stage": "test"})
    run_stage("filter", root, _params(root, None, **{"filter.sources": ["doc2query"]}))
    assert set(_filtered(root)) == {"d2q"}
    summary = run_stage("filter", root, _params(root, None, **{"filter.sources": ["synthesize", "doc2query"]}))
    out = _filtered(root)
    assert set(out) == {"syn", "d2q"} and out["syn"]["kept"] and out["d2q"]["kept"]
    assert summary["input"] == 2


def test_dense_round_trip_records_ranks(corpus_root, tmp_path, tiny_model):
    rows = [_query(f"q{i}", f"d{i}#0", f"topic{i}a topic{i}b part{i}x0") for i in range(5)]
    root = _project(corpus_root, tmp_path, rows)
    run_stage("filter", root, _params(root, tiny_model, **{
        "filter.retrievers": ["bm25", "dense"], "filter.combine": "all", "filter.k": 60, "filter.depth": 60,
        "leakage": {"jaccard": 0.8, "cosine": None}}))
    out = _filtered(root)
    assert all(r["rank_dense"] is not None and 1 <= r["rank_dense"] <= 60 for r in out.values())
    assert all(r["kept"] for r in out.values())  # k covers the whole corpus (60 chunks)


# ---------------------------------------------------------------- mine


def _kept_queries() -> list[dict]:
    return [_query(f"q{d}", f"d{d}#0", f"topic{d}a " + " ".join(COMMON)) for d in range(6)]


def test_negatives_exclude_positive_and_same_document_and_honour_window(corpus_root, tmp_path):
    root = _project(corpus_root, tmp_path, _kept_queries())
    params = _params(root, None, **{"mine.window": [3, 20], "mine.n_negatives": 5})
    run_stage("filter", root, params)
    run_stage("mine", root, params)
    triples = read_artifact(root / paths.TRIPLES, "triples").to_pylist()
    assert len(triples) == 6

    from irforge.retrieval import BM25Retriever

    ranking = BM25Retriever(root / paths.index_dir("bm25"), 0.9, 0.4, threads=1).search(
        {t["query_id"]: t["query"] for t in triples}, 20)
    for t in triples:
        negatives = t["negatives"]
        assert len(negatives) == 5
        doc = t["positive_id"].split("#")[0]
        ids = [c for c, _ in ranking[t["query_id"]]]
        for n in negatives:
            assert n["chunk_id"] != t["positive_id"] and n["chunk_id"].split("#")[0] != doc
            assert 3 <= n["rank"] <= 20 and ids[n["rank"] - 1] == n["chunk_id"] and n["source"] == "bm25"


def test_same_document_chunks_allowed_when_configured(corpus_root, tmp_path):
    root = _project(corpus_root, tmp_path, [_query("q", "d2#0", "topic2a topic2b")])
    params = _params(root, None, **{"mine.window": [1, 100], "mine.n_negatives": 50, "mine.exclude_same_doc": False})
    run_stage("filter", root, params)
    run_stage("mine", root, params)
    (triple,) = read_artifact(root / paths.TRIPLES, "triples").to_pylist()
    ids = {n["chunk_id"] for n in triple["negatives"]}
    assert "d2#1" in ids and "d2#0" not in ids


def test_seed_decides_the_sample(corpus_root, tmp_path):
    root = _project(corpus_root, tmp_path, _kept_queries())
    samples = []
    for seed in (1, 1, 2):
        params = _params(root, None, seed=seed, **{"mine.window": [1, 60], "mine.n_negatives": 3})
        run_stage("filter", root, params)
        run_stage("mine", root, params)
        samples.append([[n["chunk_id"] for n in t["negatives"]]
                        for t in read_artifact(root / paths.TRIPLES, "triples").to_pylist()])
    assert samples[0] == samples[1] and samples[0] != samples[2]


def test_false_negative_guard_drops_candidates_scoring_like_the_positive(corpus_root, tmp_path, tiny_model):
    root = _project(corpus_root, tmp_path, _kept_queries())
    base = {"mine.retrievers": ["bm25", "dense"], "mine.window": [1, 60], "mine.n_negatives": 100}
    params = _params(root, tiny_model, **base)
    run_stage("filter", root, params)
    run_stage("mine", root, params)
    unguarded = read_artifact(root / paths.TRIPLES, "triples").to_pylist()
    summary = run_stage("mine", root, _params(root, tiny_model, **base, **{"mine.false_negative_ratio": 0.0}))
    guarded = read_artifact(root / paths.TRIPLES, "triples").to_pylist()
    # Ratio 0 drops every candidate with a positive cosine: what is left scores <= 0 under the dense model.
    assert summary["false_negatives_dropped"] > 0
    assert sum(map(len, (t["negatives"] for t in guarded))) < sum(map(len, (t["negatives"] for t in unguarded)))
    assert {n["source"] for t in unguarded for n in t["negatives"]} == {"bm25", "dense"}


def test_same_inputs_give_identical_bytes(corpus_root, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    outputs = []
    for name in ("one", "two"):  # two folders: the second run starts with an empty encoder cache
        root = _project(corpus_root, tmp_path / name, _kept_queries())
        params = _params(root, tiny_model, **{"filter.retrievers": ["bm25", "dense"],
                                               "mine.retrievers": ["bm25", "dense"],
                                               "mine.false_negative_ratio": 0.95})
        run_stage("filter", root, params)
        run_stage("mine", root, params)
        outputs.append([(root / p).read_bytes() for p in (paths.FILTERED, paths.TRIPLES, paths.FILTER_METRICS)])
    assert outputs[0] == outputs[1]


# ---------------------------------------------------------------- encoder cache


def test_encoding_cache_hits_and_misses(tmp_path, tiny_model):
    from irforge.models.dense import DenseEncoder

    chunks = _chunks()[:6]
    encoder = DenseEncoder(str(tiny_model), tmp_path / "cache", max_length=32, batch_size=4, threads=1)
    first = encoder.encode_chunks(chunks)
    assert (encoder.cache_hits, encoder.cache_misses) == (0, 6)

    again = DenseEncoder(str(tiny_model), tmp_path / "cache", max_length=32, batch_size=4, threads=1)
    changed = [dict(c) for c in chunks]
    changed[2].update(text="something else entirely", content_hash="new-hash")
    second = again.encode_chunks(changed)
    assert (again.cache_hits, again.cache_misses) == (5, 1)
    assert (second[[0, 1, 3, 4, 5]] == first[[0, 1, 3, 4, 5]]).all()
    assert abs(float(second[2] @ second[2]) - 1.0) < 1e-5  # normalised

    other = DenseEncoder(str(tiny_model), tmp_path / "cache", max_length=16, batch_size=4, threads=1)
    other.encode_chunks(chunks)
    assert other.cache_misses == 6  # another setting that changes the vectors: another cache


def test_dense_retriever_returns_chunk_ids_best_first(tmp_path, tiny_model):
    from irforge.models.dense import DenseEncoder
    from irforge.retrieval import DenseRetriever

    chunks = _chunks()[:10]
    encoder = DenseEncoder(str(tiny_model), tmp_path / "cache", max_length=32, threads=1)
    retriever = DenseRetriever.from_chunks(encoder, chunks)
    text = chunks[3]["title"] + "\n" + chunks[3]["text"]
    run = retriever.search({"q": text}, k=4)
    assert run["q"][0][0] == "d1#1" and len(run["q"]) == 4  # a chunk's own text finds it first
    assert [s for _, s in run["q"]] == sorted((s for _, s in run["q"]), reverse=True)


# ---------------------------------------------------------------- audit


def test_audit_query_story(corpus_root, tmp_path):
    from irforge.ops.audit import query_story, render_query_story

    root = _project(corpus_root, tmp_path, _kept_queries())
    params = _params(root, None, **{"mine.window": [3, 20], "mine.n_negatives": 2})
    run_stage("filter", root, params)
    run_stage("mine", root, params)
    story = query_story(root / paths.TRIPLES, "q2", root)
    assert story["generated"]["prompt_id"] == "t1-abc" and story["filtered"]["rank_bm25"] == 1
    assert story["chunk"]["chunk_id"] == "d2#0" and len(story["negatives"]) == 2
    text = render_query_story(story)
    for needle in ("gen-a", "t1-abc", "rank_bm25 1", "bm25", "document 2"):
        assert needle in text
    with pytest.raises(KeyError, match="nope"):
        query_story(root / paths.TRIPLES, "nope", root)
    assert pq.read_schema(root / paths.TRIPLES).metadata  # provenance is what the story follows

    # From the teacher scores: the same story, with what every teacher said about each candidate.
    run_stage("teach", root, params.with_overrides({"teach.teachers": {"bm25": {"kind": "bm25"}}}))
    story = query_story(root / paths.TEACHER_SCORES, "q2", root)
    assert story["chunk"]["chunk_id"] == "d2#0" and set(story["teacher"]) == {"d2#0", *(n["chunk_id"] for n in story["negatives"])}
    assert set(story["teacher"]["d2#0"]) == {"bm25", "combined"}
    text = render_query_story(story)
    assert text.count("teachers: bm25 ") == 3 and "combined" in text  # the positive and its two negatives


@pytest.mark.slow
def test_filter_and_mine_with_the_embedded_encoder(corpus_root, tmp_path):
    root = _project(corpus_root, tmp_path, _kept_queries())
    params = _params(root, None, **{"encoder.model": "pkg:all-minilm-l6-v2", "encoder.precision": "auto",
                                    "filter.retrievers": ["bm25", "dense"], "mine.retrievers": ["bm25", "dense"],
                                    "mine.false_negative_ratio": 0.95, "mine.window": [3, 40]})
    run_stage("filter", root, params)
    run_stage("mine", root, params)
    out = _filtered(root)
    assert all(r["rank_dense"] is not None for r in out.values())
    triples = read_artifact(root / paths.TRIPLES, "triples").to_pylist()
    assert triples and all(n["chunk_id"].split("#")[0] != t["positive_id"].split("#")[0]
                           for t in triples for n in t["negatives"])


# ---------------------------------------------------------------- synthetic evaluation


def test_held_out_queries_are_never_trained_on_and_score_every_system(corpus_root, tmp_path):
    rows = [_query(f"q{d}", f"d{d}#0", f"topic{d}a topic{d}b {COMMON[d % len(COMMON)]}") for d in range(20)]
    root = _project(corpus_root, tmp_path, rows)
    evaluate = {"evaluate.systems": ["bm25"], "evaluate.fusions": [], "evaluate.compare": [], "evaluate.depth": 10,
                "evaluate.feedback": {"bm25-rm3": {"system": "bm25", "method": "rm3", "docs": 2, "terms": 3}},
                "mine.window": [2, 20]}
    run_stage("filter", root, _params(root, None, **evaluate))  # judged corpus: nothing held out by default
    assert not any(r["holdout"] for r in _filtered(root).values())
    params = _params(root, None, **evaluate, **{"filter.holdout": 0.25})
    assert run_stage("filter", root, params)["holdout"] == 5
    filtered = _filtered(root)
    held = {q for q, r in filtered.items() if r["holdout"]}
    kept = {q for q, r in filtered.items() if r["kept"]}
    assert len(held) == 5 and held <= kept
    run_stage("mine", root, params)
    assert {t["query_id"] for t in read_artifact(root / paths.TRIPLES, "triples").to_pylist()} == kept - held
    result = run_stage("evaluate", root, params)["synthetic"]
    assert result["queries"] == 5
    # Each held-out query names its document's own two words: BM25 ranks that document first.
    assert result["systems"]["bm25"]["nDCG@10"] == pytest.approx(1.0)
    assert set(result["systems"]) == {"bm25", "bm25-rm3"}
    assert result["agreement"]["systems"] == 2 and result["agreement"]["pairs"] == 1
    assert json.loads((root / "artifacts/evaluate/synthetic.json").read_text())["queries"] == 5
    assert "synthetic" in run_stage("report", root, params)["sections"]
    page = (root / paths.REPORT / "index.html").read_text()
    assert "Synthetic evaluation (generated queries, not human judgments)" in page and "Kendall" in page


def test_agreement_of_synthetic_and_judged_rankings():
    from stages.evaluate import EvaluateConfig, agreement_with_judgments

    cfg = EvaluateConfig(systems=["a", "b", "c"], feedback={}, fusions=[], compare=[["a", "b"]], baseline="c")
    synthetic = {"a": {"nDCG@10": 0.5}, "b": {"nDCG@10": 0.4}, "c": {"nDCG@10": 0.3}}
    judged = {"a": {"test": {"nDCG@10": 0.6}}, "b": {"test": {"nDCG@10": 0.2}}, "c": {"test": {"nDCG@10": 0.1}}}
    same = agreement_with_judgments(synthetic, judged, cfg)
    assert same == {"measure": "nDCG@10", "systems": 3, "kendall_tau": 1.0, "pairs": 3, "pairs_same_sign": 3}
    judged["b"]["test"]["nDCG@10"] = 0.05  # b now below the baseline c
    flipped = agreement_with_judgments(synthetic, judged, cfg)
    assert flipped["kendall_tau"] == pytest.approx(1 / 3, abs=1e-4) and flipped["pairs_same_sign"] == 2
