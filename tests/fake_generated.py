"""Fake `generated_queries` rows cut from the chunks themselves: for filter/mine trials and tests only.

NOT a pipeline stage (the generation stages write the real ones). Templates, from easiest to hopeless:
``title`` (the chunk title), ``sentence`` (one sentence of the chunk), ``keywords`` (five words of the
chunk), ``mixed`` (three words of the chunk + three of another document), ``offtopic`` (words of another
document only). A few rows copy an evaluation query (template ``leak``) to exercise the leakage guard.

    python tests/fake_generated.py [--root .] [--per-chunk 1] [--leaks 10]
reads the chunks and (for the leaks) the judgments stage's queries artifact (`irforge run chunk`,
`irforge run judgments` first) and writes artifacts/synthesize/queries.parquet (the ``synthetic_queries``
artifact that filter reads with ``filter.sources: [synthesize]``).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

TEMPLATES = ("title", "sentence", "keywords", "mixed", "offtopic")
_WORDS = re.compile(r"[A-Za-z]{5,}")


def fake_rows(chunks: list[dict[str, Any]], per_chunk: int = 1, seed: int = 0,
              eval_queries: list[str] | None = None, leaks: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for n, chunk in enumerate(chunks):
        own = _WORDS.findall(chunk["text"]) or chunk["text"].split()
        for j in range(per_chunk):
            template = TEMPLATES[(n * per_chunk + j) % len(TEMPLATES)]
            other = chunks[rng.randrange(len(chunks))]
            while len(chunks) > 1 and other["doc_id"] == chunk["doc_id"]:
                other = chunks[rng.randrange(len(chunks))]
            foreign = _WORDS.findall(other["text"]) or other["text"].split()
            if template == "title":
                text = chunk["title"] or own[0]
            elif template == "sentence":
                sentences = [s for s in re.split(r"(?<=[.!?])\s+", chunk["text"]) if len(s.split()) >= 4]
                text = rng.choice(sentences or [chunk["text"]])
            elif template == "keywords":
                text = " ".join(rng.sample(own, min(5, len(own))))
            elif template == "mixed":
                text = " ".join(rng.sample(own, min(3, len(own))) + rng.sample(foreign, min(3, len(foreign))))
            else:
                text = " ".join(rng.sample(foreign, min(5, len(foreign))))
            rows.append(_row(chunk, text, template, j, rng.gauss(-1.0 - TEMPLATES.index(template) * 0.3, 0.4)))
    for j, text in enumerate((eval_queries or [])[:leaks]):
        rows.append(_row(chunks[j % len(chunks)], text, "leak", 0, -1.0))
    return rows


def _row(chunk: dict[str, Any], text: str, template: str, n: int, logprob: float) -> dict[str, Any]:
    key = f"{chunk['chunk_id']}|fake|{template}|{n}"
    return {
        "query_id": hashlib.sha256(key.encode()).hexdigest()[:16], "chunk_id": chunk["chunk_id"],
        "doc_id": chunk["doc_id"], "text": text, "generator": "fake-extractive", "model_hash": "none",
        "prompt_id": f"{template}-0", "template": template, "seed": 0, "mean_logprob": float(logprob),
        "kept": bool(text.strip()), "reason": None if text.strip() else "empty",
    }


def main() -> None:
    import paths
    from irforge.contract import SCHEMAS, ArtifactError, read_artifact, write_artifact
    from irforge.corpus import queries_of

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=".")
    parser.add_argument("--per-chunk", type=int, default=1)
    parser.add_argument("--leaks", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.root)
    chunks = read_artifact(root / paths.CHUNKS, "chunks").to_pylist()
    # The evaluation queries the filter's leakage guard checks against: the judgments stage's artifact.
    if args.leaks and not (root / paths.QUERIES).exists():
        raise ArtifactError(f"{root / paths.QUERIES}: no evaluation queries to leak; run `irforge run judgments` "
                            "first (or pass --leaks 0)")
    evals = list(queries_of(read_artifact(root / paths.QUERIES, "queries")).values()) if args.leaks else []
    rows = fake_rows(chunks, args.per_chunk, args.seed, evals, args.leaks)
    write_artifact(pa.Table.from_pylist(rows, SCHEMAS["generated_queries"]), root / paths.SYNTHETIC,
                   "generated_queries", {"stage": "fake-generated (tests/fake_generated.py)", "stage_version": "0",
                                         "params": vars(args), "params_hash": "", "inputs": [],
                                         "created_at": ""})
    print(f"wrote {len(rows)} fake generated queries to {paths.SYNTHETIC}")


if __name__ == "__main__":
    main()
