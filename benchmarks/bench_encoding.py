"""Encoding throughput: irforge's DenseEncoder vs a plain ``SentenceTransformer.encode``, same chunks, one run.

Both sides use the same model, thread count, batch size and max length; the sides alternate over ``--rounds``
rounds and the ratio is on the medians (min and median of each side printed, with the conditions; ``--load``
repeats it beside a second irforge job). Also measured: DenseEncoder in float32 (what
length-sorting alone gives: sentence-transformers already sorts by length inside one call), the cosine of
the DenseEncoder vectors to the float32 baseline (must stay >= 0.99), and a second pass served from the
embedding cache.

    python benchmarks/bench_encoding.py [--model pkg:embeddinggemma-300m] [--max-chunks 200] [--threads 2] [--rounds 3] [--load]

Every side reads the same texts: the passages as the model reads them (EmbeddingGemma: its document prompt with
the title in it).
Needs artifacts/chunk/chunks.parquet (`irforge run chunk`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import conditions
import numpy as np

from irforge.contract import owned


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", default="artifacts/chunk/chunks.parquet")
    parser.add_argument("--model", default="pkg:all-minilm-l6-v2")
    parser.add_argument("--max-chunks", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    conditions.add_arguments(parser)
    args = parser.parse_args()
    with conditions.competing_job(args.load):
        measure(args)


def measure(args) -> None:
    import torch

    from irforge.contract import read_artifact
    from irforge.models import DenseEncoder, load_sentence_transformer

    torch.set_num_threads(args.threads)
    chunks = read_artifact(Path(args.chunks), "chunks").to_pylist()
    # A spread of lengths (every k-th chunk), not just the first documents.
    chunks = chunks[:: max(1, len(chunks) // args.max_chunks)][: args.max_chunks]

    with owned.temp_dir() as cache:
        settings = {"max_length": args.max_length, "batch_size": args.batch_size, "threads": args.threads}
        ours = DenseEncoder(args.model, cache, **settings, precision="auto")
        ours_f32 = DenseEncoder(args.model, cache, **settings, precision="float32")
        plain = load_sentence_transformer(ours.model_info, args.max_length)
        texts = [ours.passage(c["title"], c["text"]) for c in chunks]

        def baseline() -> np.ndarray:
            return plain.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)

        sides = {"sentence-transformers encode (float32)": baseline,
                 f"DenseEncoder ({ours.precision})": lambda: ours.encode(texts),
                 "DenseEncoder (float32)": lambda: ours_f32.encode(texts)}
        # Warm-up: first calls pay for allocations and kernel selection.
        plain.encode(texts[:8], batch_size=8)
        ours.encode(texts[:8])
        ours_f32.encode(texts[:8])
        conditions.header(f"encoding {len(texts)} chunks, {args.threads} threads, batch {args.batch_size}, "
                          f"max_length {args.max_length}, {args.rounds} rounds")
        times, vectors = conditions.alternate(sides, args.rounds)

        start = time.perf_counter()
        ours.encode_chunks(chunks)  # fills the cache
        fill = time.perf_counter() - start
        start = time.perf_counter()
        ours.encode_chunks(chunks)
        cached = time.perf_counter() - start

    names = list(sides)
    base = vectors[names[0]]
    conditions.summary(times, len(texts), "chunks")
    for name in names:
        cos = (vectors[name] * base).sum(axis=1)
        print(f"  {name:<42} x{conditions.ratio(times, names[0], name):.2f}  cosine to float32 min {cos.min():.5f} "
              f"mean {cos.mean():.5f}")
    print(f"  {'DenseEncoder, cache fill / cache hit':<42} {fill:7.2f} s / {cached:.3f} s")
    print(f"RATIO DenseEncoder / plain encode throughput: {conditions.ratio(times, names[0], names[1]):.2f}x "
          f"(medians; aim >= 1.5x, >= 2x for the big encoders)")
    conditions.footer()


if __name__ == "__main__":
    main()
