"""Query generation speed: the stage's batched generator vs a naive one-chunk-at-a-time `generate` loop.

Both sides use the same model, prompts and sampling settings (n samples per chunk, top-k/top-p, stop at the
end of the line, mean token log-prob computed) in the same run. Then the stage's path is run again on the
same chunks to time a fully cached re-run. The sides alternate over ``--rounds`` rounds; chunks/minute and the
ratio are on the medians, printed with the conditions (``--load``: beside a second irforge job).

    python benchmarks/bench_generation.py --model pkg:smollm2-135m-instruct --chunks 16
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import conditions
import pyarrow.parquet as pq

from irforge.contract import owned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pkg:smollm2-135m-instruct")
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="auto: what the generate stage picks on this CPU")
    ap.add_argument("--template", default="doc2query")
    ap.add_argument("--chunks-file", default="artifacts/chunk/chunks.parquet", help="output of `irforge run chunk`")
    conditions.add_arguments(ap, rounds=2)
    args = ap.parse_args()
    with conditions.competing_job(args.load):
        measure(args)


def measure(args) -> None:

    import torch

    from irforge.generation import (
        CleaningRules,
        Generator,
        SamplingParams,
        generate_queries,
        generic_examples,
        load_template,
        select_chunks,
    )

    gen = Generator(args.model, threads=args.threads, dtype=args.dtype)
    template = load_template(args.template, generic_examples())
    chunks = select_chunks(pq.read_table(args.chunks_file).to_pylist(), args.chunks, seed=13)
    sp = SamplingParams(n=args.n, temperature=0.8, top_k=50, top_p=0.95, max_new_tokens=args.max_new_tokens)
    prompts = [gen.format(template, c["title"], c["text"]) for c in chunks]
    def naive() -> list:
        """One chunk at a time through transformers' generate (n sequences, log-probs from the scores)."""
        torch.manual_seed(13)
        out_rows = []
        with torch.inference_mode():
            for prompt in prompts:
                enc = gen.tokenizer(prompt, return_tensors="pt", add_special_tokens=not gen.use_chat)
                out = gen.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                         do_sample=True, temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p,
                                         max_new_tokens=sp.max_new_tokens, num_return_sequences=sp.n,
                                         eos_token_id=sorted(gen.stop_ids), pad_token_id=gen.tokenizer.pad_token_id,
                                         stop_strings=["\n"], tokenizer=gen.tokenizer, output_scores=True,
                                         return_dict_in_generate=True)
                scores = gen.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
                texts = gen.tokenizer.batch_decode(out.sequences[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                out_rows.append([(t.strip(), float(s[torch.isfinite(s)].mean())) for t, s in zip(texts, scores)])
        return out_rows

    with owned.temp_dir() as tmp:
        fresh = itertools.count()

        def batched():  # a new row cache every time: this side generates, never reads back
            return generate_queries(chunks, gen, template, sp, 13, args.batch_size, Path(tmp) / f"{next(fresh)}.sqlite",
                                    CleaningRules(), args.model, "bench")

        conditions.header(f"query generation: {args.model} ({gen.dtype}, {args.threads} threads), {len(chunks)} "
                          f"chunks, n={sp.n}, max_new_tokens={sp.max_new_tokens}, batch_size={args.batch_size}")
        times, results = conditions.alternate({"naive generate loop": naive, "batched (stage)": batched}, args.rounds)
        cache = Path(tmp) / "cached.sqlite"
        result = generate_queries(chunks, gen, template, sp, 13, args.batch_size, cache, CleaningRules(), args.model,
                                  "bench")
        started = time.perf_counter()
        again = generate_queries(chunks, gen, template, sp, 13, args.batch_size, cache, CleaningRules(), args.model,
                                 "bench")
        t_cached = time.perf_counter() - started
    assert again.rows == result.rows == results["batched (stage)"].rows  # seeded: every batched run is the same

    per_min = {name: [60 * len(chunks) / t for t in values] for name, values in times.items()}
    conditions.summary(times)
    for name, rates in per_min.items():
        print(f"  {name:<20} {statistics.median(rates):8.1f} chunks/min (median)")
    print(f"  cached re-run        {t_cached:8.2f} s")
    print(f"RATIO batched / naive: {conditions.ratio(times, 'naive generate loop', 'batched (stage)'):.2f}x (medians)")
    print("example (naive | batched):", results["naive generate loop"][0][0][0], "|", result.rows[0]["text"])
    conditions.footer()


if __name__ == "__main__":
    main()
