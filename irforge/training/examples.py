"""Training examples from mined triples, and batches in which no positive occurs twice."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    query: str
    positive_id: str
    positive: str
    negatives: tuple[str, ...]
    teacher: tuple[float, ...] | None = None  # the teacher's scores of (positive, *negatives), when distilling


def build_examples(rows: list[dict[str, Any]], texts: dict[str, str], negatives: int, pick: str,
                   queries_per_chunk: int | None, max_triples: int | None, rng: np.random.Generator,
                   source: str = "triples", teacher: dict[str, dict[str, float]] | None = None,
                   leave_out: frozenset[str] | set[str] = frozenset()) -> list[Example]:
    """Triples -> examples with exactly ``negatives`` hard negatives each.

    Negatives are the mined ones (``pick``: ``top`` = best ranked first, ``random`` = a random subset); a query
    with fewer mined negatives than asked gets random corpus passages to fill up, so every example has the
    same shape. ``texts`` maps chunk ids to passage texts; an id that is not a chunk is an error naming the
    row and field.

    With ``teacher`` (query id -> chunk id -> score, from the teach stage) every example carries the teacher's
    scores of its candidates; negatives then come only from the scored (mined) ones, and a query with fewer
    than ``negatives`` of them is left out (counted in the log) rather than topped up with unscored passages.
    Queries in ``leave_out`` (the topicality cut) are checked like the rest, then skipped: row numbers in errors
    stay the file's.
    """
    if not rows:
        raise ValueError(f"{source}: no triples to train on")
    chunk_ids = list(texts)
    if negatives >= len(chunk_ids):
        raise ValueError(f"train.negatives={negatives} needs more than {negatives} chunks; the corpus has {len(chunk_ids)}")
    order = rng.permutation(len(rows))
    kept: dict[str, int] = {}
    examples: list[Example] = []
    unscored = 0
    for i in order:
        row = rows[i]
        where = f"{source}: row {i} (query_id {row['query_id']})"
        if row["positive_id"] not in texts:
            raise ValueError(f"{where}: field 'positive_id': '{row['positive_id']}' is not a chunk id")
        mined = sorted(row["negatives"], key=lambda n: n["rank"])
        for neg in mined:
            if neg["chunk_id"] not in texts:
                raise ValueError(f"{where}: field 'negatives.chunk_id': '{neg['chunk_id']}' is not a chunk id")
        if row["query_id"] in leave_out:
            continue
        if queries_per_chunk is not None and kept.get(row["positive_id"], 0) >= queries_per_chunk:
            continue
        ids = [n["chunk_id"] for n in mined if n["chunk_id"] != row["positive_id"]]
        if pick == "random" and len(ids) > negatives:
            ids = [ids[j] for j in sorted(rng.choice(len(ids), negatives, replace=False))]
        ids = ids[:negatives]
        if teacher is not None:
            scored = teacher.get(row["query_id"], {})
            ids = [j for j in ids if j in scored]
            if row["positive_id"] not in scored or len(ids) < negatives:
                unscored += 1
                continue
        while len(ids) < negatives:
            filler = chunk_ids[int(rng.integers(len(chunk_ids)))]
            if filler != row["positive_id"] and filler not in ids:
                ids.append(filler)
        kept[row["positive_id"]] = kept.get(row["positive_id"], 0) + 1
        scores = None if teacher is None else tuple(teacher[row["query_id"]][j] for j in [row["positive_id"], *ids])
        examples.append(Example(row["query"], row["positive_id"], texts[row["positive_id"]],
                                tuple(texts[j] for j in ids), scores))
    if max_triples is not None:
        examples = examples[:max_triples]
    log.info("training examples: %d (of %d triples), %d hard negative(s) each, %d distinct positives",
             len(examples), len(rows), negatives, len({e.positive_id for e in examples}))
    if unscored:
        log.warning("%d triple(s) left out: fewer than %d teacher-scored negatives (mine.n_negatives)", unscored, negatives)
    if not examples:
        raise ValueError(f"{source}: no example has {negatives} teacher-scored negatives; lower train.negatives "
                         "or raise mine.n_negatives")
    return examples


def make_batches(examples: list[Example], batch_size: int, rng: np.random.Generator) -> list[list[Example]]:
    """Shuffled batches in which no positive occurs twice (a duplicate waits for the next batch)."""
    pending = deque(examples[i] for i in rng.permutation(len(examples)))
    batches: list[list[Example]] = []
    while pending:
        batch: list[Example] = []
        seen: set[str] = set()
        deferred: list[Example] = []
        while pending and len(batch) < batch_size:
            ex = pending.popleft()
            (deferred if ex.positive_id in seen else batch).append(ex)
            seen.add(ex.positive_id)
        pending.extendleft(reversed(deferred))
        batches.append(batch)
    return batches
