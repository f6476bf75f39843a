"""Generation plumbing with tiny random models built here (a Llama causal LM and a T5), plus one slow test
with a real embedded model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import paths
from irforge.config import Params
from irforge.contract import SCHEMAS, read_artifact, read_provenance
from irforge.engine import run_stage
from irforge.generation import CleaningRules, Generator, SamplingParams, generate_queries, load_template, select_chunks

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _tokenizer_into(folder: Path) -> int:
    """Copy the embedded MiniLM (BERT WordPiece) tokenizer: offline, and any vocabulary works for random weights."""
    from irforge.models import resolve_model

    src = resolve_model("pkg:all-minilm-l6-v2").path
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = _tokenizer_into(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=101, eos_token_id=102, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    vocab = _tokenizer_into(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=102)
    T5ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def llama_gen(tiny_llama, tmp_path_factory) -> Generator:
    return Generator(str(tiny_llama), tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def t5_gen(tiny_t5, tmp_path_factory) -> Generator:
    return Generator(str(tiny_t5), tmp_path_factory.mktemp("cache"))


PASSAGES = [
    "the boundary layer grows along a flat plate in a steady stream",
    "heat transfer",
    "a long passage about shock waves that form ahead of blunt bodies moving at hypersonic speed in air",
    "wing lift rises in a propeller slipstream",
    "transition to turbulence depends on the roughness of the surface and the pressure gradient",
]
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=8, stop_at_newline=False)
SAMPLED = SamplingParams(n=3, temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=8, stop_at_newline=False)


@pytest.mark.parametrize("model", ["llama_gen", "t5_gen"])
def test_batched_greedy_equals_one_prompt_at_a_time(model, request):
    gen = request.getfixturevalue(model)
    keys = [str(i) for i in range(len(PASSAGES))]
    batched = gen.generate(PASSAGES, keys, GREEDY, seed=1, batch_size=4)
    single = [gen.generate([p], [k], GREEDY, seed=1, batch_size=1)[0] for p, k in zip(PASSAGES, keys)]
    assert [[s.text for s in r] for r in batched] == [[s.text for s in r] for r in single]
    for b, s in zip(batched, single):
        assert b[0].mean_logprob == pytest.approx(s[0].mean_logprob, abs=1e-4)
        assert b[0].mean_logprob < 0


def test_causal_greedy_matches_transformers_generate(llama_gen):
    """The hand-written KV-cached loop decodes exactly what `generate` does."""
    gen = llama_gen
    prompt = PASSAGES[0]
    enc = gen.tokenizer(prompt, return_tensors="pt")
    ref = gen.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                             max_new_tokens=8, eos_token_id=sorted(gen.stop_ids))
    tokens = [t for t in ref[0, enc["input_ids"].shape[1]:].tolist() if t not in gen.stop_ids]
    ours = gen.generate([prompt], ["k"], GREEDY, seed=0)[0][0]
    assert ours.text == gen.tokenizer.decode(tokens, skip_special_tokens=True).strip()


@pytest.mark.parametrize("model", ["llama_gen", "t5_gen"])
def test_sampling_is_seeded_per_row_not_per_batch(model, request):
    gen = request.getfixturevalue(model)
    keys = [f"hash{i}" for i in range(len(PASSAGES))]
    first = gen.generate(PASSAGES, keys, SAMPLED, seed=7, batch_size=5)
    again = gen.generate(PASSAGES, keys, SAMPLED, seed=7, batch_size=2)  # other batch-mates
    assert [[s.text for s in r] for r in first] == [[s.text for s in r] for r in again]
    other = gen.generate(PASSAGES, keys, SAMPLED, seed=8, batch_size=5)
    assert [[s.text for s in r] for r in first] != [[s.text for s in r] for r in other]
    assert any(len({s.text for s in r}) > 1 for r in first)  # n samples of one prompt differ


def test_encoder_decoder_is_detected(t5_gen, llama_gen):
    assert t5_gen.is_encoder_decoder
    llama = llama_gen
    assert not llama.is_encoder_decoder and not llama.use_chat  # BERT tokenizer: no chat template
    assert llama.format(load_template("doc2query"), "T", "x").endswith("Title: T\nPassage: x\nQuery:")


def _chunks(texts: list[str]) -> list[dict]:
    from irforge.corpus import sha256_text

    return [{"chunk_id": f"d{i}#0", "doc_id": f"d{i}", "title": f"title {i}", "text": t,
             "content_hash": sha256_text(f"title {i}", t)} for i, t in enumerate(texts)]


def test_row_cache_hits_and_regenerates_only_changed_chunks(llama_gen, tmp_path, monkeypatch):
    gen = llama_gen
    template = load_template("doc2query")
    cache = tmp_path / "cache.sqlite"
    calls: list[int] = []
    original = gen.generate

    def counting(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(prompts, *args, **kwargs)

    monkeypatch.setattr(gen, "generate", counting)
    run = lambda chunks: generate_queries(chunks, gen, template, SAMPLED, 3, 2, cache, CleaningRules(),  # noqa: E731
                                          "tiny", "test")
    first = run(_chunks(PASSAGES))
    assert calls == [len(PASSAGES)]
    second = run(_chunks(PASSAGES))
    assert calls == [len(PASSAGES)]  # all from the cache: nothing generated
    assert second.rows == first.rows
    changed = list(PASSAGES)
    changed[2] = changed[2] + " and the heat they bring"
    third = run(_chunks(changed))
    assert calls == [len(PASSAGES), 1]  # only the edited chunk
    unchanged = [r for r in third.rows if r["chunk_id"] != "d2#0"]
    assert unchanged == [r for r in first.rows if r["chunk_id"] != "d2#0"]
    # Other generation params are another cache entry.
    generate_queries(_chunks(PASSAGES), gen, template, GREEDY, 3, 2, cache, CleaningRules(), "tiny", "test")
    assert calls[-1] == len(PASSAGES)


def test_rows_carry_provenance_columns_and_reasons(llama_gen, tmp_path):
    gen = llama_gen
    template = load_template("doc2query")
    result = generate_queries(_chunks(PASSAGES), gen, template, SAMPLED, 3, 4, tmp_path / "c.sqlite",
                              CleaningRules(min_words=1), "tiny", "test")
    table = pa.Table.from_pylist(result.rows, schema=SCHEMAS["generated_queries"])
    assert table.num_rows == len(PASSAGES) * SAMPLED.n
    assert set(table.column("template").to_pylist()) == {"doc2query"}
    assert all(r["prompt_id"].startswith("doc2query@") and r["model_hash"] == gen.model_hash for r in result.rows)
    assert all((r["reason"] is None) == r["kept"] for r in result.rows)
    assert len({r["query_id"] for r in result.rows}) == len(result.rows)
    assert result.metrics["kept"] + sum(result.metrics["dropped"].values()) == len(result.rows)


def test_select_chunks_is_seeded_and_stable_under_edits():
    rows = [{"chunk_id": f"d{i}#0", "text": str(i)} for i in range(100)]
    a = select_chunks(rows, 10, seed=1)
    assert len(a) == 10 and a == select_chunks(rows, 10, seed=1)
    assert [r["chunk_id"] for r in a] != [r["chunk_id"] for r in select_chunks(rows, 10, seed=2)]
    edited = [dict(r, text="changed") if r["chunk_id"] == a[0]["chunk_id"] else r for r in rows]
    assert [r["chunk_id"] for r in select_chunks(edited, 10, seed=1)] == [r["chunk_id"] for r in a]
    assert select_chunks(rows, None, seed=1) == rows


@pytest.mark.slow
def test_doc2query_stage_with_embedded_smollm(tmp_path):
    """End to end on 3 Cranfield chunks with the real embedded SmolLM2 (GGUF), cached on a second run."""
    import json
    import os

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "data", tmp_path / "data")
    # The row cache is a runtime setting now (runtime.cache_dir/generation.sqlite).
    params = Params.load(root / "params.yaml", {"doc2query.max_chunks": 3, "doc2query.n": 2,
                                                "runtime.cache_dir": str(tmp_path / "gen-cache")})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_stage("chunk", tmp_path, params)
    run_stage("judgments", tmp_path, params)  # the leakage rule checks expansions against these queries
    summary = run_stage("doc2query", tmp_path, params)
    assert summary["chunks"] == 3 and summary["queries"] == 6
    assert (tmp_path / "gen-cache" / "generation.sqlite").exists()

    rows = read_artifact(tmp_path / paths.DOC2QUERY, "generated_queries").to_pylist()
    assert all(r["generator"] == "pkg:smollm2-135m-instruct" for r in rows)
    prov = read_provenance(tmp_path / paths.DOC2QUERY)  # the generator, and the encoder of the leakage rule
    models = {m["name"]: m["sha256"] for m in prov["models"]}
    assert models["pkg:smollm2-135m-instruct"] == rows[0]["model_hash"] and "pkg:all-minilm-l6-v2" in models
    expanded = read_artifact(tmp_path / paths.EXPANDED, "expanded_chunks").to_pylist()
    assert sum(bool(r["expansion"]) for r in expanded) <= 3
    metrics = json.loads((tmp_path / paths.DOC2QUERY_METRICS).read_text())
    assert metrics["queries"] == 6
    run_stage("doc2query", tmp_path, params)  # second run: every row from the cache, same artifact rows
    assert read_artifact(tmp_path / paths.DOC2QUERY, "generated_queries").to_pylist() == rows


def _tiny_project(tmp_path: Path, model: Path, **overrides) -> Params:
    """A project folder with a 4-document corpus, one judged query, and params pointing both query stages at
    ``model``."""
    import json

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "title": f"title {i}", "text": t}) + "\n"
                              for i, t in enumerate(PASSAGES[:4])))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "wing lift in a slipstream"}) + "\n")
    # Judgments come in pairs now (corpus.queries and corpus.qrels, or neither): q1 is about passage 3.
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t3\t1\n")
    root = Path(__file__).resolve().parents[1]
    sets = {"corpus.path": str(corpus), "corpus.queries": "queries.jsonl", "corpus.qrels": "qrels.tsv",
            "runtime.cache_dir": str(tmp_path / "gen-cache"), "runtime.threads": 1}
    for stage in ("doc2query", "synthesize"):
        sets |= {f"{stage}.model": str(model), f"{stage}.max_chunks": 3, f"{stage}.n": 2, f"{stage}.dtype": "float32",
                 f"{stage}.max_new_tokens": 6, f"{stage}.cleaning": {"min_words": 1}}
    sets["doc2query.template"] = "auto"
    sets |= overrides
    return Params.load(root / "params.yaml", sets)


def test_query_stages_end_to_end_with_a_tiny_model(tiny_llama, tmp_path):
    import json

    params = _tiny_project(tmp_path, tiny_llama)
    run_stage("chunk", tmp_path, params)
    run_stage("judgments", tmp_path, params)  # synthesize reads the evaluation queries from this artifact
    d2q = run_stage("doc2query", tmp_path, params)
    syn = run_stage("synthesize", tmp_path, params)
    assert d2q["queries"] == 6 and syn["queries"] == 6
    queries = read_artifact(tmp_path / paths.DOC2QUERY, "generated_queries").to_pylist()
    assert {r["template"] for r in queries} == {"doc2query"}
    synthetic = read_artifact(tmp_path / paths.SYNTHETIC, "generated_queries").to_pylist()
    assert {r["template"] for r in synthetic} == {"promptagator"}
    assert read_provenance(tmp_path / paths.SYNTHETIC)["models"][0]["sha256"] == synthetic[0]["model_hash"]
    expanded = read_artifact(tmp_path / paths.EXPANDED, "expanded_chunks").to_pylist()
    assert len(expanded) == 4  # every chunk, expanded or not
    kept = {}
    for r in queries:
        if r["kept"]:
            kept.setdefault(r["chunk_id"], []).append(r["text"])
    assert {r["chunk_id"]: r["expansion"] for r in expanded if r["expansion"]} == \
        {c: "\n".join(t) for c, t in kept.items()}
    metrics = json.loads((tmp_path / paths.SYNTHETIC_METRICS).read_text())
    assert metrics["kept"] + sum(metrics["dropped"].values()) == 6


def test_synthesize_refuses_examples_that_are_test_queries(tiny_llama, tmp_path):
    import json

    from irforge.generation import LeakedTestQueryError

    leak = tmp_path / "examples.jsonl"
    leak.write_text(json.dumps({"passage": "p", "query": "Wing lift in a slipstream?"}) + "\n")
    params = _tiny_project(tmp_path, tiny_llama, **{"synthesize.examples": str(leak)})
    run_stage("chunk", tmp_path, params)
    run_stage("judgments", tmp_path, params)
    with pytest.raises(LeakedTestQueryError, match="evaluation query 'q1'"):
        run_stage("synthesize", tmp_path, params)
    assert not (tmp_path / paths.SYNTHETIC).exists()


def test_generation_caches_opened_at_once_on_a_fresh_file_do_not_fail(tmp_path):
    """doc2query and synthesize open the same fresh cache file in parallel flow tasks; switching it to WAL used to
    fail with 'database is locked' in a few rounds out of 200 (CI caught it in the flow test)."""
    import threading

    from irforge.generation.cache import GenerationCache

    errors: list[Exception] = []

    def open_close(path):
        try:
            GenerationCache(path).close()
        except Exception as e:  # any failure is what this test looks for
            errors.append(e)

    for i in range(200):
        threads = [threading.Thread(target=open_close, args=(tmp_path / f"{i}.sqlite",)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_doc2query_leaves_evaluation_queries_out_of_the_expanded_index(tiny_llama, tmp_path, monkeypatch):
    """Its expansions reach the evaluated bm25-d2q index: a generated query that repeats an evaluation query (the
    filter's rule: word Jaccard, dense cosine) is dropped with the reason, never appended."""
    import stages.doc2query as d2q
    from irforge.generation import QueryRun

    params = _tiny_project(tmp_path, tiny_llama, **{"leakage.cosine": None})
    run_stage("chunk", tmp_path, params)
    run_stage("judgments", tmp_path, params)
    evaluation = read_artifact(tmp_path / paths.QUERIES, "queries").to_pylist()[0]
    chunk = read_artifact(tmp_path / paths.CHUNKS, "chunks").to_pylist()[0]
    row = {"chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"], "generator": "g", "model_hash": "h",
           "prompt_id": "p", "template": "doc2query", "seed": 13, "mean_logprob": -1.0, "kept": True, "reason": None}
    rows = [dict(row, query_id="a", text="an unrelated generated query"),
            dict(row, query_id="b", text=evaluation["text"].upper())]
    metrics = {"chunks": 1, "queries": 2, "kept": 2, "kept_fraction": 1.0, "dropped": {}}
    monkeypatch.setattr(d2q, "generate_queries", lambda *a, **k: QueryRun(rows=rows, metrics=metrics))
    summary = run_stage("doc2query", tmp_path, params)
    assert summary["kept"] == 1 and summary["metrics"]["dropped"]["leakage"] == 1
    generated = {r["query_id"]: r for r in read_artifact(tmp_path / paths.DOC2QUERY, "generated_queries").to_pylist()}
    assert not generated["b"]["kept"] and generated["b"]["reason"].startswith(f"leakage: eval query {evaluation['query_id']}")
    expanded = {r["chunk_id"]: r["expansion"] for r in read_artifact(tmp_path / paths.EXPANDED, "expanded_chunks").to_pylist()}
    assert expanded[chunk["chunk_id"]] == "an unrelated generated query"


def test_synthesize_with_query_types_and_dev_split_examples(tiny_llama, tmp_path):
    """`examples: dev` shows only dev-split queries (listed in metrics.json), `template: [...]` gives each chunk one
    type, and the counts per type add up."""
    import json

    params = _tiny_project(tmp_path, tiny_llama, **{"synthesize.examples": "dev", "synthesize.n_examples": 2,
                                                     "synthesize.max_chunks": 4,
                                                     "synthesize.template": ["question", "keywords", "claim"]})
    # six judged queries, each about one passage: two of them form the dev split (at most a third)
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"question {i} about x"}) + "\n"
                                                    for i in range(6)))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i % 4}\t1\n" for i in range(6)))
    run_stage("chunk", tmp_path, params)
    run_stage("judgments", tmp_path, params)
    splits = {r["query_id"]: r["split"] for r in read_artifact(tmp_path / paths.QUERIES, "queries").to_pylist()}
    summary = run_stage("synthesize", tmp_path, params)
    metrics = json.loads((tmp_path / paths.SYNTHETIC_METRICS).read_text())
    shown = metrics["examples"]
    assert len(shown) == 2 and all(splits[e["query_id"]] == "dev" for e in shown)
    rows = read_artifact(tmp_path / paths.SYNTHETIC, "generated_queries").to_pylist()
    assert {r["template"] for r in rows} <= {"question", "keywords", "claim"} and len(rows) == summary["queries"] == 8
    by_chunk = {}
    for r in rows:
        by_chunk.setdefault(r["chunk_id"], set()).add(r["template"])
    assert all(len(t) == 1 for t in by_chunk.values())  # a chunk's samples share its type (and its prefill)
    assert sum(c["queries"] for c in metrics["templates"].values()) == 8
    assert sum(c["kept"] for c in metrics["templates"].values()) == metrics["kept"]
