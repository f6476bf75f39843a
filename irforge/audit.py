"""Lineage of an artifact: its provenance, then its inputs' provenance, back to the raw files.

Each input is re-hashed and compared with the hash recorded when the artifact was made, so an input that
changed (or vanished) since is flagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irforge.artifacts import read_provenance, sha256_path


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
        head = (f"{node.path}  [{p.get('artifact')}{', %d rows' % p['rows'] if 'rows' in p else ''}]  "
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


def audit_command(path: Path | None, root: Path, validate: bool, html: Path | None, params: Any) -> bool:
    """What `irforge audit` does: lineage of ``path`` and/or validation of the run; False on a violation."""
    import typer

    from irforge import validate as checks
    from irforge.artifacts import write_text_atomic

    if path is None and not validate:
        raise ValueError("give an artifact path, or --validate to check every artifact of the run")
    tree = render_text(lineage(path, root)) if path is not None else None
    if tree:
        typer.echo(tree)
    report = checks.validate_run(root, params) if validate else None
    if report:
        typer.echo(checks.render_text(report))
    if html:
        body = checks.render_html(report, tree) if report else checks.render_html(checks.Report(Path(root)), tree)
        write_text_atomic(html, body)
        typer.echo(f"wrote {html}")
    return report is None or report.ok
