"""``irforge audit --validate``: check every artifact of a run (everything under ``artifacts/``).

Checks, each skipped (not failed) when the artifacts it needs do not exist yet:

- **readable + schema**: every Parquet file opens and matches the schema its provenance names; the row
  count matches the one recorded; a Parquet file without provenance is a violation.
- **provenance**: every input an artifact recorded still exists with the recorded sha256.
- **referential integrity**: every chunk's document is in the corpus and its id is ``<doc_id>#<index>``;
  every generated/filtered query, expansion and embedding points at an existing chunk (of the same
  document); every triple's positive and negatives exist and no negative is the positive; every run's
  document is in the corpus.
- **no evaluation query in training data or an evaluated index**: no generated query that reaches training
  (kept generated and filtered queries that are not held out, triples) or an index (doc2query expansions)
  repeats an evaluation query by the stages' own word rule (:mod:`irforge.corpus.leakage`, ``leakage.jaccard``;
  the dense ``leakage.cosine`` check needs the encoder and runs in the stages only). Rows that never reach
  training (dropped, or held out as the synthetic test set) are not counted.
- **no test query in a prompt**: the few-shot examples a stage lists in its metrics (synthesize) are neither a
  test-split query (by id) nor the text of one; the dev split is the only one a prompt may show.

Leftover temporary files of a killed write are reported as warnings: the artifact beside them is intact.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from irforge.config import Config
from irforge.contract import ARTIFACTS
from irforge.contract.artifacts import (
    DIR_PROVENANCE,
    SIDECAR_SUFFIX,
    ArtifactError,
    read_artifact,
    read_provenance,
    sha256_path,
)
from irforge.corpus import Document, leak_reasons, load_queries, read_corpus

CHUNKS = f"{ARTIFACTS}/chunk/chunks.parquet"  # the chunks artifact other tables point into

LEAK_KINDS = ("generated_queries", "filtered_queries", "triples", "expanded_chunks")  # texts that may leak
_EXAMPLES = 5  # offending rows quoted per violation


@dataclass
class Finding:
    artifact: str
    check: str
    message: str


@dataclass
class Report:
    root: Path
    artifacts: dict[str, str] = field(default_factory=dict)  # path -> "kind, N rows"
    checks: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # path -> checks passed/run
    skipped: list[str] = field(default_factory=list)
    violations: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def fail(self, artifact: str, check: str, message: str) -> None:
        self.violations.append(Finding(artifact, check, message))


def _rel(path: Path, root: Path) -> str:
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def _examples(values: Iterable[Any]) -> str:
    values = list(values)
    more = f" (and {len(values) - _EXAMPLES} more)" if len(values) > _EXAMPLES else ""
    return ", ".join(repr(v) for v in values[:_EXAMPLES]) + more


# ---------------------------------------------------------------- discovery and per-file checks


def discover(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(Parquet files, artifacts with provenance of their own kind (folders, sidecar files), temp leftovers)."""
    base = root / ARTIFACTS
    if not base.is_dir():
        return [], [], []
    parquet, others, leftovers = [], [], []
    for path in sorted(base.rglob("*")):
        if ".tmp-" in path.name or ".old-" in path.name:
            leftovers.append(path)
        elif any(".tmp-" in p or ".old-" in p for p in path.relative_to(base).parts[:-1]):
            continue
        elif path.is_file() and path.suffix == ".parquet":
            parquet.append(path)
        elif path.is_dir() and (path / DIR_PROVENANCE).exists() or path.is_file() and (path.with_name(path.name + SIDECAR_SUFFIX)).exists():
            others.append(path)
    return parquet, others, leftovers


def _check_inputs(report: Report, rel: str, provenance: dict[str, Any], hashes: dict[str, str | None]) -> None:
    for item in provenance.get("inputs", []):
        path = report.root / item["path"] if not Path(item["path"]).is_absolute() else Path(item["path"])
        key = str(path)
        if key not in hashes:
            hashes[key] = sha256_path(path) if path.exists() else None
        if hashes[key] is None:
            report.fail(rel, "provenance", f"input {item['path']} recorded (sha256 {item['sha256'][:12]}) no longer exists")
        elif hashes[key] != item["sha256"]:
            report.fail(rel, "provenance", f"input {item['path']} changed since recorded: sha256 {item['sha256'][:12]} "
                        f"recorded, {hashes[key][:12]} now (re-run the stage, e.g. `dvc repro`)")
    report.checks[rel].append("provenance")


# ---------------------------------------------------------------- cross-artifact checks


def _corpus_ids(config: Config, root: Path) -> set[str] | None:
    cfg = config.section("corpus")
    path = root / cfg.path
    if not path.exists():
        return None
    return {item.doc_id for item in read_corpus(path, cfg) if isinstance(item, Document)}


def _eval_queries(config: Config, root: Path) -> dict[str, str] | None:
    cfg = config.section("corpus")
    if not cfg.queries or not (root / cfg.queries).exists():
        return None
    return load_queries(root / cfg.queries)


def _missing(column: pa.ChunkedArray | pa.Array, known: pa.Array) -> list[str]:
    mask = pc.invert(pc.is_in(column, value_set=known))
    return pc.unique(pc.filter(column, mask)).to_pylist()


def _check_outputs_agree(report: Report, runs: dict[tuple[str, str | None], list[tuple[str, dict[str, Any]]]]) -> None:
    """The outputs of one stage must come from one run of it: same code, same params, same input hashes. A run
    killed between two of its writes leaves a new output beside an old one (chunks and their quarantine)."""
    for (stage, variant), outputs in runs.items():
        if stage in (None, "test") or len(outputs) < 2:
            continue
        first_rel, first = outputs[0]
        for rel, prov in outputs[1:]:
            inputs = {i["path"]: i.get("sha256") for i in first.get("inputs", [])}
            differ = [key for key in ("code_sha256", "params_hash") if prov.get(key) != first.get(key)]
            differ += [i["path"] for i in prov.get("inputs", []) if i["path"] in inputs and inputs[i["path"]] != i.get("sha256")]
            if differ:
                report.fail(rel, "run", f"written by another run of stage {stage}{f' ({variant})' if variant else ''} "
                            f"than {first_rel} (they differ in {', '.join(differ[:3])}): a run was interrupted between "
                            "its writes; re-run the stage")


def _check_references(report: Report, tables: dict[str, list[tuple[str, pa.Table]]], corpus: set[str] | None) -> None:
    chunks = next((t for rel, t in tables.get("chunks", []) if rel == CHUNKS), None)
    if chunks is None and tables.get("chunks"):
        chunks = tables["chunks"][0][1]
    if corpus is None:
        report.skipped.append("chunk -> document references: corpus not found (corpus.path)")
    corpus_ids = pa.array(sorted(corpus), pa.string()) if corpus is not None else None
    for rel, table in tables.get("chunks", []):
        if corpus_ids is not None and (missing := _missing(table.column("doc_id"), corpus_ids)):
            report.fail(rel, "references", f"{len(missing)} chunk document(s) not in the corpus: {_examples(missing)}")
        expected = pc.binary_join_element_wise(table.column("doc_id"), pc.cast(table.column("passage_index"), pa.string()), "#")
        bad = pc.filter(table.column("chunk_id"), pc.not_equal(table.column("chunk_id"), expected)).to_pylist()
        if bad:
            report.fail(rel, "references", f"{len(bad)} chunk id(s) not of the form <doc_id>#<passage_index>: {_examples(bad)}")
        if pc.count_distinct(table.column("chunk_id")).as_py() != table.num_rows:
            report.fail(rel, "references", "duplicate chunk_id values")
        report.checks[rel].append("references")

    if chunks is None:
        if any(k in tables for k in ("generated_queries", "expanded_chunks", "filtered_queries", "triples", "embeddings")):
            report.skipped.append("chunk references of queries/triples/embeddings: no chunks artifact")
    else:
        chunk_ids = chunks.column("chunk_id").combine_chunks()
        chunk_doc = dict(zip(chunk_ids.to_pylist(), chunks.column("doc_id").to_pylist(), strict=True))
        for kind in ("generated_queries", "expanded_chunks", "filtered_queries", "embeddings"):
            for rel, table in tables.get(kind, []):
                if missing := _missing(table.column("chunk_id"), chunk_ids):
                    report.fail(rel, "references", f"{len(missing)} chunk id(s) not in {CHUNKS}: {_examples(missing)}")
                if "doc_id" in table.column_names:
                    wrong = [c for c, d in zip(table.column("chunk_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True)
                             if c in chunk_doc and chunk_doc[c] != d]
                    if wrong:
                        report.fail(rel, "references", f"{len(wrong)} row(s) name a document other than their chunk's: {_examples(wrong)}")
                report.checks[rel].append("references")
        for rel, table in tables.get("triples", []):
            if missing := _missing(table.column("positive_id"), chunk_ids):
                report.fail(rel, "references", f"{len(missing)} positive(s) not in {CHUNKS}: {_examples(missing)}")
            flat = pc.list_flatten(table.column("negatives"))
            negatives = flat.field("chunk_id") if isinstance(flat, pa.StructArray) else pc.struct_field(flat, "chunk_id")
            if missing := _missing(negatives, chunk_ids):
                report.fail(rel, "references", f"{len(missing)} negative(s) not in {CHUNKS}: {_examples(missing)}")
            same = [q for q, pos, negs in zip(table.column("query_id").to_pylist(), table.column("positive_id").to_pylist(),
                                              table.column("negatives").to_pylist(), strict=True)
                    if any(n["chunk_id"] == pos for n in negs)]
            if same:
                report.fail(rel, "references", f"{len(same)} triple(s) use the positive as a negative: {_examples(same)}")
            report.checks[rel].append("references")
    for rel, table in tables.get("run", []):
        if corpus_ids is not None:
            if missing := _missing(table.column("doc_id"), corpus_ids):
                report.fail(rel, "references", f"{len(missing)} retrieved document(s) not in the corpus: {_examples(missing)}")
            report.checks[rel].append("references")


def _reaching(kind: str, table: pa.Table) -> list[tuple[str, str]]:
    """(row id, text) of the generated texts of an artifact that reach training or an evaluated index."""
    rows = table.to_pylist()
    if kind == "expanded_chunks":
        return [(r["chunk_id"], line) for r in rows for line in (r["expansion"] or "").split("\n") if line.strip()]
    if kind == "triples":
        return [(r["query_id"], r["query"]) for r in rows]
    return [(r["query_id"], r["text"]) for r in rows if r["kept"] and not r.get("holdout")]


def _check_leakage(report: Report, tables: dict[str, list[tuple[str, pa.Table]]], evaluation: dict[str, str] | None,
                   jaccard_at: float | None) -> None:
    present = [kind for kind in LEAK_KINDS if kind in tables]
    if not present:
        report.skipped.append("evaluation-query leakage: no training artifact (generated/filtered queries, triples) yet")
        return
    if evaluation is None:
        report.skipped.append("evaluation-query leakage: the corpus has no evaluation queries (corpus.queries)")
        return
    for kind in present:
        for rel, table in tables[kind]:
            rows = _reaching(kind, table)
            verdicts = leak_reasons([text for _, text in rows], evaluation, jaccard_at)
            hits = [f"{rid} -> {v.split('eval query ')[1]}" for (rid, _), v in zip(rows, verdicts, strict=True) if v]
            if hits:
                report.fail(rel, "leakage", f"{len(hits)} row(s) that reach training or an index repeat an evaluation "
                            f"query (row -> evaluation query): {_examples(hits)}")
            report.checks[rel].append("leakage")


def _check_examples(report: Report, tables: dict[str, list[tuple[str, pa.Table]]],
                    shown: list[tuple[str, list[dict[str, Any]]]]) -> None:
    if not shown:
        return
    if "queries" not in tables:
        report.skipped.append("few-shot examples: no judged queries artifact yet")
        return
    from irforge.corpus import queries_of, splits_of
    from irforge.generation import LeakedTestQueryError, check_no_test_queries
    from irforge.generation.prompting import Example

    judged = tables["queries"][0][1]
    splits = splits_of(judged)
    not_dev = {q: t for q, t in queries_of(judged).items() if splits[q] != "dev"}
    for rel, examples in shown:
        try:
            check_no_test_queries([Example(passage="", query=e["query"], query_id=e.get("query_id")) for e in examples],
                                  not_dev, source=rel)
        except LeakedTestQueryError as e:
            report.fail(rel, "examples", str(e))
        report.checks[rel].append("examples")


# ---------------------------------------------------------------- entry point


def validate_run(root: Path | str, config: Config) -> Report:
    root = Path(root)
    report = Report(root)
    parquet, others, leftovers = discover(root)
    if not parquet and not others:
        report.skipped.append(f"everything: no artifacts under {root / ARTIFACTS} yet")
    for path in leftovers:
        artifact = path.with_name(path.name[1:].split(".old-")[0].split(".tmp-")[0])
        if ".old-" in path.name and not artifact.exists():  # a publish killed between its two renames
            report.fail(_rel(artifact, root), "leftover",
                        f"missing; its previous version is {_rel(path, root)} (a publish was interrupted): the next "
                        f"run of its stage restores it, or `mv` it back; do not delete it")
        else:
            report.warnings.append(Finding(_rel(path, root), "leftover", "temporary file of an interrupted write; "
                                           "the artifact beside it is intact; safe to delete"))
    runs: dict[tuple[str, str | None], list[tuple[str, dict[str, Any]]]] = defaultdict(list)  # outputs per stage run
    hashes: dict[str, str | None] = {}
    tables: dict[str, list[tuple[str, pa.Table]]] = defaultdict(list)
    for path in parquet:
        rel = _rel(path, root)
        try:
            provenance = read_provenance(path)
        except ArtifactError as e:
            report.fail(rel, "readable", str(e))
            continue
        if provenance is None:
            report.fail(rel, "provenance", "Parquet file without irforge provenance (not written by a stage)")
            continue
        kind = provenance.get("artifact", "?")
        try:
            table = read_artifact(path, kind)
        except ArtifactError as e:
            report.fail(rel, "schema", str(e))
            continue
        report.checks[rel].append("schema")
        report.artifacts[rel] = f"{kind}, {table.num_rows} rows"
        if provenance.get("rows") not in (None, table.num_rows):
            report.fail(rel, "schema", f"{table.num_rows} rows, provenance recorded {provenance['rows']}")
        tables[kind].append((rel, table))
        _check_inputs(report, rel, provenance, hashes)
        runs[(provenance.get("stage"), provenance.get("variant"))].append((rel, provenance))
    for path in others:
        rel = _rel(path, root)
        provenance = read_provenance(path) or {}
        report.artifacts[rel] = provenance.get("artifact", "folder")
        _check_inputs(report, rel, provenance, hashes)
        runs[(provenance.get("stage"), provenance.get("variant"))].append((rel, provenance))
    _check_outputs_agree(report, runs)
    shown: list[tuple[str, list[dict[str, Any]]]] = []  # few-shot examples a stage says it showed
    for path in sorted((root / ARTIFACTS).rglob("*.json")) if (root / ARTIFACTS).is_dir() else []:
        if ".tmp-" in path.as_posix() or ".old-" in path.as_posix():
            continue
        rel = _rel(path, root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            report.fail(rel, "readable", f"not valid JSON ({e})")
            continue
        report.checks[rel].append("json")
        examples = data.get("examples") if isinstance(data, dict) else None  # few-shot examples: {query_id, query}
        if isinstance(examples, list) and any(isinstance(e, dict) and "query" in e for e in examples):
            shown.append((rel, [e for e in examples if isinstance(e, dict) and "query" in e]))
    _check_references(report, tables, _corpus_ids(config, root))
    _check_leakage(report, tables, _eval_queries(config, root), config.section("leakage").jaccard)
    _check_examples(report, tables, shown)
    return report


def render_text(report: Report) -> str:
    failed = {f.artifact for f in report.violations}
    lines = [f"audit --validate: {len(set(report.artifacts) | failed)} artifact(s) under {report.root / ARTIFACTS}"]
    for rel in sorted(set(report.artifacts) | failed):
        status = "FAIL" if rel in failed else "ok  "
        lines.append(f"  {status} {rel}  [{report.artifacts.get(rel, 'unreadable')}]  checks: "
                     + ", ".join(dict.fromkeys(report.checks.get(rel, []))))
    for s in report.skipped:
        lines.append(f"  skip {s}")
    for w in report.warnings:
        lines.append(f"  warn {w.artifact}: {w.message}")
    if report.violations:
        lines.append(f"{len(report.violations)} violation(s):")
        lines += [f"  {f.artifact}: [{f.check}] {f.message}" for f in report.violations]
    else:
        lines.append("no violations")
    return "\n".join(lines)


def render_html(report: Report, lineage_text: str | None = None) -> str:
    e = html.escape
    failed = {f.artifact for f in report.violations}
    rows = "".join(
        f"<tr class='{'fail' if rel in failed else 'ok'}'><td>{'FAIL' if rel in failed else 'ok'}</td><td>{e(rel)}</td>"
        f"<td>{e(report.artifacts.get(rel, 'unreadable'))}</td><td>{e(', '.join(dict.fromkeys(report.checks.get(rel, []))))}</td></tr>"
        for rel in sorted(set(report.artifacts) | failed))
    violations = "".join(f"<tr class='fail'><td>{e(f.artifact)}</td><td>{e(f.check)}</td><td>{e(f.message)}</td></tr>"
                         for f in report.violations) or "<tr><td colspan=3>none</td></tr>"
    notes = "".join(f"<li>skipped: {e(s)}</li>" for s in report.skipped)
    notes += "".join(f"<li>warning: {e(w.artifact)}: {e(w.message)}</li>" for w in report.warnings)
    lineage = f"<h2>Lineage</h2><pre>{e(lineage_text)}</pre>" if lineage_text else ""
    verdict = "no violations" if report.ok else f"{len(report.violations)} violation(s)"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>irforge audit</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.fail td{{background:#fdd}} tr.ok td:first-child{{color:#070}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}
</style></head><body><h1>irforge audit: {e(verdict)}</h1><p>{e(str(report.root.absolute()))}</p>
<h2>Artifacts</h2><table><tr><th></th><th>artifact</th><th>kind</th><th>checks</th></tr>{rows}</table>
<h2>Violations</h2><table><tr><th>artifact</th><th>check</th><th>what</th></tr>{violations}</table>
<ul>{notes}</ul>{lineage}</body></html>
"""
