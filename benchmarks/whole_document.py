"""Chunked vs whole-document dense retrieval with the same checkpoint, on the project's judged queries.

The plain-script baseline a user would write: encode each document's title + text as one text (cut at
``--max-length`` tokens), search exact cosine, score nDCG@10 per split. Printed next to irforge's dense-zs
(chunks, max-aggregated to documents) read from the project's evaluate metrics, so a chunking cost shows.

    python benchmarks/whole_document.py --root .
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge.contract import read_artifact  # noqa: E402
from irforge.corpus import load_documents, passage_text, qrels_of, queries_of, splits_of  # noqa: E402
from irforge.engine import load_config  # noqa: E402
from irforge.evaluation import score, significance  # noqa: E402
from irforge.models.dense import DenseEncoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--model", default="pkg:all-minilm-l6-v2")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    root = args.root.resolve()
    config = load_config(root)
    corpus = config.section("corpus")
    docs = load_documents(root, corpus, max_chars=10**7).documents
    table = read_artifact(root / "artifacts/judgments/queries.parquet", "queries")
    qrels = qrels_of(read_artifact(root / "artifacts/judgments/qrels.parquet", "qrels"))
    queries = {q: t for q, t in queries_of(table).items() if q in qrels}
    splits = splits_of(table)
    encoder = DenseEncoder(args.model, root / ".irforge-cache", max_length=args.max_length, use_cache=False)
    ids = [d.doc_id for d in docs]
    vectors = encoder.encode([passage_text(d.title, d.text) for d in docs], desc="encode documents")
    qvectors = encoder.encode(list(queries.values()), desc="encode queries")
    top = np.argsort(-(qvectors @ vectors.T), axis=1)[:, :100]
    run = {q: [(ids[j], float(qvectors[i] @ vectors[j])) for j in top[i]] for i, q in enumerate(queries)}
    _, per_query = score(run, qrels, ["nDCG@10"])
    values = {r["query_id"]: r["value"] for r in per_query}
    metrics = json.loads((root / "artifacts/evaluate/metrics.json").read_text()).get("dense-zs", {})
    print(f"{'':<28}{'all':>8}{'dev':>8}{'test':>8}")
    row = [np.mean([values.get(q, 0.0) for q in queries if split in (None, splits[q])]) for split in (None, "dev", "test")]
    print(f"{'whole document':<28}" + "".join(f"{v:>8.4f}" for v in row))
    if metrics:
        print(f"{'irforge dense-zs (chunks)':<28}{metrics['nDCG@10']:>8.4f}{metrics['dev']['nDCG@10']:>8.4f}"
              f"{metrics['test']['nDCG@10']:>8.4f}")
        chunked = {r["query_id"]: r["value"] for r in read_artifact(root / "artifacts/evaluate/per_query.parquet",
                                                                    "per_query_metrics").to_pylist()
                   if r["system"] == "dense-zs" and r["measure"] == "nDCG@10"}
        test = [q for q in queries if splits[q] == "test"]
        paired = {"chunks": {q: chunked.get(q, 0.0) for q in test}, "whole": {q: values.get(q, 0.0) for q in test}}
        result = significance(paired, "chunks", "whole", seed=config.seed)
        print(f"test split, chunks - whole document: {result['delta']:+.4f} nDCG@10, p = {result['p_randomisation']}")


if __name__ == "__main__":
    main()
