"""Lineage of an artifact: its provenance, then its inputs' provenance, back to the raw files.

Each input is re-hashed and compared with the hash recorded when the artifact was made, so an input that
changed (or vanished) since is flagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irforge.contract.artifacts import read_provenance, sha256_path


@dataclass
class Node:
    path: str
    provenance: dict[str, Any] | None  # None: a raw input (corpus, queries) or a missing file
    exists: bool
    recorded_sha256: str | None = None  # what the consumer recorded
    current_sha256: str | None = None
    inputs: list[Node] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.exists:
            return "MISSING"
        if self.recorded_sha256 is None:
            return ""
        return "ok" if self.recorded_sha256 == self.current_sha256 else "CHANGED since recorded"


def lineage(path: Path | str, root: Path | str = ".", recorded: str | None = None) -> Node:
    # Hashes are memoised within one walk only (an input shared by several artifacts is hashed once): a
    # process-wide cache would keep reporting "ok" for a file edited since the first audit.
    return _walk(Path(path), Path(root), recorded, {})


def _walk(path: Path, root: Path, recorded: str | None, hashes: dict[str, str]) -> Node:
    full = path if path.is_absolute() else root / path
    rel = _relative(full, root)
    if not full.exists():
        if recorded is None:
            raise FileNotFoundError(f"{full}: no such artifact")
        return Node(rel, None, exists=False, recorded_sha256=recorded)
    provenance = read_provenance(full)
    if recorded and str(full) not in hashes:
        hashes[str(full)] = sha256_path(full)
    node = Node(rel, provenance, exists=True, recorded_sha256=recorded,
                current_sha256=hashes[str(full)] if recorded else None)
    for item in (provenance or {}).get("inputs", []):
        node.inputs.append(_walk(Path(item["path"]), root, item["sha256"], hashes))
    return node


def _relative(path: Path, root: Path) -> str:
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def render_text(node: Node, indent: str = "", last: bool = True, top: bool = True) -> str:
    branch = "" if top else ("└─ " if last else "├─ ")
    p = node.provenance
    if p:
        rows = f", {p['rows']} rows" if "rows" in p else ""
        head = (f"{node.path}  [{p.get('artifact')}{rows}]  "
                f"stage {p['stage']} v{p['stage_version']}  params {p['params_hash'][:12]}  {p['created_at']}")
    else:
        head = f"{node.path}  [raw input]" if node.exists else f"{node.path}"
    if node.recorded_sha256:
        head += f"  sha256 {node.recorded_sha256[:12]} {node.status}"
    lines = [indent + branch + head]
    child_indent = indent + ("" if top else ("   " if last else "│  "))
    if p:
        lines.append(child_indent + "   params: " + json.dumps(p["params"], sort_keys=True))
        for m in p.get("models", []):
            lines.append(child_indent + f"   model: {m['name']} ({m['source']}) sha256 {m['sha256'][:12]}")
        lines.append(child_indent + f"   code sha256 {p.get('code_sha256', '')[:12]}  versions: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(p.get("versions", {}).items())))
    for i, child in enumerate(node.inputs):
        lines.append(render_text(child, child_indent, i == len(node.inputs) - 1, top=False))
    return "\n".join(lines)


def audit_command(path: Path | None, root: Path, validate: bool, html: Path | None,
                  config: Any) -> tuple[str, bool]:
    """What `irforge audit` prints (lineage of ``path`` and/or validation of the run) and whether it passed."""
    from irforge.contract.artifacts import write_text_atomic
    from irforge.ops import validate as checks

    if path is None and not validate:
        raise ValueError("give an artifact path, or --validate to check every artifact of the run")
    lines = []
    tree = render_text(lineage(path, root)) if path is not None else None
    if tree:
        lines.append(tree)
    report = checks.validate_run(root, config) if validate else None
    if report:
        lines.append(checks.render_text(report))
    if html:
        body = checks.render_html(report, tree) if report else checks.render_html(checks.Report(Path(root)), tree)
        write_text_atomic(html, body)
        lines.append(f"wrote {html}")
    return "\n".join(lines), report is None or report.ok


# ---------------------------------------------------------------- one training query's story


def _input_of(path: Path, kind: str, root: Path) -> Path | None:
    """The input of ``kind`` recorded in an artifact's provenance (first one), as a path under ``root``."""
    for item in (read_provenance(path) or {}).get("inputs", []):
        if item.get("kind") == kind:
            return root / item["path"]
    return None


def _find(path: Path | None, kind: str, column: str, value: str) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    import pyarrow.compute as pc

    from irforge.contract.artifacts import read_artifact

    table = read_artifact(path, kind)
    rows = table.filter(pc.equal(table.column(column), value)).to_pylist()
    return rows[0] if rows else None


def query_story(path: Path | str, query_id: str, root: Path | str = ".") -> dict[str, Any]:
    """A query's whole story: generated row (generator, prompt), filter verdict and ranks, its chunk,
    and (from a triples artifact) its negatives with their chunks. ``path`` is a triples or a
    filtered_queries artifact; the others are found through the provenance chain."""
    root = Path(root)
    path = Path(path) if Path(path).is_absolute() else root / path
    kind = (read_provenance(path) or {}).get("artifact")
    scores: dict[str, dict[str, tuple[float, float]]] = {}
    if kind == "teacher_scores":  # every teacher's score of each candidate, then the triple they scored
        scores = _teacher_scores(path, query_id)
        path, kind = _input_of(path, "triples", root), "triples"
        if path is None:
            raise ValueError("the teacher scores record no triples artifact in their provenance")
    if kind not in ("triples", "filtered_queries"):
        raise ValueError(f"{path}: --query needs a teacher_scores, triples or filtered_queries artifact, found '{kind}'")
    triple, filtered_path = None, path
    if kind == "triples":
        triple = _find(path, "triples", "query_id", query_id)
        if triple is None:
            raise KeyError(f"{path}: no triple for query '{query_id}'")
        filtered_path = _input_of(path, "filtered_queries", root)
    filtered = _find(filtered_path, "filtered_queries", "query_id", query_id)
    if filtered is None:
        raise KeyError(f"{filtered_path}: no query '{query_id}'")
    generated = None
    for source in (read_provenance(filtered_path) or {}).get("inputs", []):
        if source.get("kind") == "generated_queries":
            generated = generated or _find(root / source["path"], "generated_queries", "query_id", query_id)
    chunks_path = _input_of(filtered_path, "chunks", root)
    negatives = []
    for neg in (triple or {}).get("negatives", []):
        negatives.append({**neg, "chunk": _find(chunks_path, "chunks", "chunk_id", neg["chunk_id"])})
    return {"query_id": query_id, "generated": generated, "filtered": filtered,
            "chunk": _find(chunks_path, "chunks", "chunk_id", filtered["chunk_id"]),
            "triple": triple, "negatives": negatives, "teacher": scores}


def _teacher_scores(path: Path, query_id: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{chunk_id: {teacher: (score, normalised)}}`` of one query, from a teacher_scores artifact."""
    import pyarrow.compute as pc

    from irforge.contract.artifacts import read_artifact

    table = read_artifact(path, "teacher_scores")
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for r in table.filter(pc.equal(table.column("query_id"), query_id)).to_pylist():
        out.setdefault(r["chunk_id"], {})[r["teacher"]] = (r["score"], r["normalised"])
    if not out:
        raise KeyError(f"{path}: no teacher scores for query '{query_id}'")
    return out


def _teachers(story: dict[str, Any], chunk_id: str) -> str:
    said = story.get("teacher", {}).get(chunk_id)
    return "" if not said else "  teachers: " + "  ".join(
        f"{t} {s:.3f} (z {z:+.2f})" if t != "combined" else f"combined {s:+.2f}" for t, (s, z) in said.items())


def _snippet(chunk: dict[str, Any] | None, width: int = 100) -> str:
    if chunk is None:
        return "(chunk not found)"
    text = " ".join(f"{chunk['title']} | {chunk['text']}".split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render_query_story(story: dict[str, Any]) -> str:
    f, g = story["filtered"], story["generated"]
    lines = [f"query {story['query_id']}: {f['text']}"]
    if g:
        lines.append(f"  generated by {g['generator']} (model {g['model_hash'][:12]})  prompt {g['prompt_id']}  "
                     f"template {g['template']}  seed {g['seed']}  mean_logprob {g['mean_logprob']:.3f}")
    else:
        lines.append(f"  generated by {f['generator']}  prompt {f['prompt_id']}  (generated row not found)")
    lines.append(f"  filter: {'kept' if f['kept'] else 'dropped: ' + str(f['reason'])}  "
                 f"rank_bm25 {f['rank_bm25']}  rank_dense {f['rank_dense']}")
    lines.append(f"  positive {f['chunk_id']}: {_snippet(story['chunk'])}")
    if story.get("teacher"):
        lines.append(f"  {_teachers(story, f['chunk_id']).strip()}")
    if story["triple"] is not None:
        lines.append(f"  negatives ({len(story['negatives'])}):")
        for n in story["negatives"]:
            lines.append(f"    {n['chunk_id']:<12} {n['source']:<6} rank {n['rank']:<4} score {n['score']:.3f}  "
                         f"{_snippet(n['chunk'], 70)}")
            if story.get("teacher"):
                lines.append(f"      {_teachers(story, n['chunk_id']).strip()}")
    return "\n".join(lines)
