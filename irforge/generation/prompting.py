"""Prompt templates (files in irforge/generation/prompts/) and the few-shot examples they show.

A template file is the prompt text with ``{title}``, ``{passage}``, ``{examples}`` and ``{index}`` (the number of
the example being asked for). Few-shot templates add a line ``=== example ===`` followed by the format of one
example (same fields plus ``{query}`` and ``{bad_query}``); the rendered examples replace ``{examples}``.

Few-shot examples are the generic ones shipped here (general science, written for irforge, nothing from any
evaluation collection), a user's own file, *training* judgments of the collection, or its judged queries' **dev**
split (``dev``). Test queries must never reach a prompt: :func:`check_no_test_queries` refuses examples whose
query id or text is one of them.

Query types (question, keywords, claim, ...) are templates: a stage given several assigns each chunk one of them
(:func:`irforge.generation.querygen.assign_templates`), and the ``template`` column says which.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from irforge.corpus.judgments import read_json_lines

EXAMPLE_MARKER = "=== example ==="
GENERIC_EXAMPLES = "generic"
DEV_EXAMPLES = "dev"  # the judged queries' dev split, with a judged passage each


class LeakedTestQueryError(ValueError):
    """A few-shot example is an evaluation query (it would leak the test set into training data)."""


@dataclass(frozen=True)
class Example:
    passage: str
    query: str
    bad_query: str = ""
    title: str = ""
    query_id: str | None = None  # set for examples taken from the collection's training judgments


@dataclass(frozen=True)
class Template:
    id: str
    body: str
    example_format: str | None  # None: zero-shot
    examples: tuple[Example, ...] = ()
    max_passage_words: int = 200

    @property
    def prompt_id(self) -> str:
        """Template id + a hash of everything that shapes the prompt (text, examples, passage cap)."""
        blob = json.dumps([self.body, self.example_format, [vars(e) for e in self.examples], self.max_passage_words])
        return f"{self.id}@{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def _example(self, text: str, index: int, e: Example) -> str:
        return text.format(index=index, title=e.title, passage=_cap(e.passage, self.max_passage_words),
                           query=e.query, bad_query=e.bad_query)

    def render(self, title: str, passage: str) -> str:
        """The prompt as one text (completion models, seq2seq)."""
        shots = "".join(self._example(self.example_format, i, e) for i, e in enumerate(self.examples, start=1)) \
            if self.example_format else ""
        return self.body.format(examples=shots, index=len(self.examples) + 1, title=title,
                                passage=_cap(passage, self.max_passage_words))

    def messages(self, title: str, passage: str) -> list[dict[str, str]]:
        """The prompt as chat turns (chat models): the text before ``{examples}`` is the system turn, each
        example a user turn (up to ``{query}``) and an assistant turn (from ``{query}`` on), then the asked-for
        document. Small chat models follow few-shot turns far better than examples pasted into one message
        (with one message Qwen2.5-0.5B answered for the examples, not for the document)."""
        fields = {"index": len(self.examples) + 1, "title": title, "passage": _cap(passage, self.max_passage_words)}
        if "{examples}" not in self.body or not self.example_format:
            return [{"role": "user", "content": self.body.format(examples="", **fields).strip()}]
        head, _, tail = self.body.partition("{examples}")
        turns = [{"role": "system", "content": head.format(**fields).strip()}] if head.strip() else []
        asked, _, answer = self.example_format.partition("{query}")
        for i, e in enumerate(self.examples, start=1):
            turns.append({"role": "user", "content": self._example(asked, i, e).strip()})
            turns.append({"role": "assistant", "content": self._example("{query}" + answer, i, e).strip()})
        turns.append({"role": "user", "content": tail.format(**fields).strip()})
        return turns


def _cap(text: str, max_words: int) -> str:
    words = text.split()
    return " ".join(words[:max_words]) if len(words) > max_words else " ".join(words)


def template_names() -> list[str]:
    return sorted(p.name.removesuffix(".txt") for p in resources.files("irforge.generation.prompts").iterdir()
                  if p.name.endswith(".txt"))


def load_template(name: str, examples: list[Example] | None = None, max_passage_words: int = 200) -> Template:
    """A shipped template by id (e.g. ``inpars-vanilla``) or a path to a template file of the same format."""
    path = Path(name)
    if path.suffix == ".txt" and path.exists():
        text, tid = path.read_text(encoding="utf-8"), path.stem
    else:
        file = resources.files("irforge.generation.prompts") / f"{name}.txt"
        if not file.is_file():
            raise ValueError(f"unknown prompt template '{name}' (shipped: {', '.join(template_names())}; "
                             "or give a path to a .txt template)")
        text, tid = file.read_text(encoding="utf-8"), name
    body, marker, example_format = text.partition(EXAMPLE_MARKER + "\n")
    for field in re.findall(r"{(\w+)}", body):
        if field not in ("examples", "index", "title", "passage"):
            raise ValueError(f"template '{name}': unknown field {{{field}}} (title, passage, examples, index)")
    if "{passage}" not in body:
        raise ValueError(f"template '{name}' never shows the passage ({{passage}} is missing)")
    if marker and not examples:
        raise ValueError(f"template '{name}' is few-shot but no examples were given")
    return Template(id=tid, body=body.rstrip(),
                    example_format=example_format or None, examples=tuple(examples or ()) if marker else (),
                    max_passage_words=max_passage_words)


def load_templates(names: str | list[str], examples: list[Example] | None = None,
                   max_passage_words: int = 200) -> list[Template]:
    """One template, or several (query types); a name may not repeat (each type's queries are counted apart)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"template: expected one template or a list of different ones, got {names!r}")
    return [load_template(n, examples, max_passage_words) for n in names]


def generic_examples() -> list[Example]:
    lines = (resources.files("irforge.generation.prompts") / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    return [Example(**json.loads(line)) for line in lines if line.strip()]


def read_examples(path: Path) -> list[Example]:
    """Examples from a JSONL file of ``{"passage", "query"[, "bad_query", "title", "query_id"]}`` objects."""
    out = [Example(passage=obj["passage"], query=obj["query"], bad_query=obj.get("bad_query", ""),
                   title=obj.get("title", ""), query_id=obj.get("query_id"))
           for _, obj in read_json_lines(path, ("passage", "query"))]
    if not out:
        raise ValueError(f"{path}: no few-shot examples in the file")
    return out


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def check_no_test_queries(examples: list[Example], test_queries: dict[str, str], source: str = "examples") -> None:
    """Raise :class:`LeakedTestQueryError` if an example's query id or (normalised) text is an evaluation query."""
    by_text = {_norm(t): qid for qid, t in test_queries.items()}
    for i, e in enumerate(examples, start=1):
        if e.query_id is not None and str(e.query_id) in test_queries:
            raise LeakedTestQueryError(f"{source}: example {i} is evaluation query id '{e.query_id}'; "
                                     "few-shot examples must come from training judgments, never test ones")
        if _norm(e.query) in by_text:
            raise LeakedTestQueryError(f"{source}: example {i} ('{e.query}') is evaluation query "
                                     f"'{by_text[_norm(e.query)]}'; few-shot examples must never be test queries")


def training_examples(queries: dict[str, str], qrels: dict[str, dict[str, int]], passages: dict[str, tuple[str, str]],
                      k: int, seed: int) -> list[Example]:
    """``k`` (query, judged passage) pairs from training judgments, chosen by seed; ``passages`` maps a
    doc id to (title, text)."""
    pairs = sorted(
        (qid, doc) for qid, docs in qrels.items() if qid in queries
        for doc, grade in docs.items() if grade > 0 and doc in passages
    )
    pairs.sort(key=lambda p: hashlib.sha256(f"{seed}\x1f{p[0]}\x1f{p[1]}".encode()).hexdigest())
    chosen, seen = [], set()
    for qid, doc in pairs:
        if qid not in seen:
            seen.add(qid)
            chosen.append(Example(passage=passages[doc][1], title=passages[doc][0], query=queries[qid], query_id=qid))
        if len(chosen) == k:
            break
    if not chosen:
        raise ValueError("training judgments give no (query, passage) pair present in the corpus")
    return chosen


def resolve_examples(spec: Any, root: Path, k: int, seed: int, passages: dict[str, tuple[str, str]],
                     dev: tuple[dict[str, str], dict[str, dict[str, int]]] | None = None,
                     ) -> tuple[list[Example], list[Path]]:
    """Few-shot examples from params: ``generic``, ``dev`` (``dev`` = the dev split's queries and qrels), a JSONL
    path, or ``{queries: ..., qrels: ...}`` training judgments (BEIR files). Returns the examples and the files
    read (for provenance)."""
    if spec in (None, GENERIC_EXAMPLES):
        return generic_examples()[:k], []
    if spec == DEV_EXAMPLES:
        if not dev or not dev[0]:
            raise ValueError("examples: dev asks for the judged queries' dev split, but it is empty (set corpus.queries "
                             "and corpus.qrels, and judgments.dev_queries > 0; or use generic or a JSONL file)")
        return training_examples(dev[0], dev[1], passages, k, seed), []
    if isinstance(spec, str):
        path = root / spec
        return read_examples(path)[:k], [path]
    if isinstance(spec, dict) and {"queries", "qrels"} <= set(spec):
        from irforge.corpus.judgments import load_qrels, load_queries

        qpath, rpath = root / spec["queries"], root / spec["qrels"]
        return training_examples(load_queries(qpath), load_qrels(rpath), passages, k, seed), [qpath, rpath]
    raise ValueError(f"examples: expected 'generic', 'dev', a JSONL path or {{queries, qrels}}, got {spec!r}")
