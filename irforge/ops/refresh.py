"""Incremental refresh: what changed in the corpus since the last index, and a Lucene index updated in place.

Change detection compares each document's content hash (``doc_hash``, the same hash the chunk stage
stamps on every chunk) with the previous chunks table. Only added and changed documents are re-chunked
(and re-expanded); unchanged chunks are carried over as they are.

The Lucene update works at segment level: the previous index's files are hard-linked into the new version
folder (Lucene never rewrites a file once written, so the previous version stays intact), the chunks of
changed and deleted documents are deleted by id, and the new chunks, indexed on their own by Anserini
exactly as a full build would, are added with ``IndexWriter.addIndexes``. Analysis and encoding cost is
proportional to the change, not to the corpus. Deleted documents would still count in BM25's collection
statistics (document count, average length) until Lucene merged their segment away, which moved a small
corpus's BM25 top 10 for half of its queries; so the segments holding deletions are rewritten
(``forceMergeDeletes``: a copy of postings, no re-analysis), and scores equal a full rebuild's. A periodic full
rebuild (``reindex.full_every``) also restores the one-segment layout.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from irforge.contract import owned
from irforge.retrieval import build_lucene_index, ensure_java

log = logging.getLogger(__name__)

# Files of a Lucene index that belong to one writer session, never shared between versions.
_PRIVATE_FILES = ("write.lock", "_provenance.json")


@dataclass
class ChangeSet:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def to_chunk(self) -> set[str]:
        """Documents whose chunks must be (re)made."""
        return set(self.added) | set(self.changed)

    @property
    def to_remove(self) -> set[str]:
        """Documents whose previous chunks must go."""
        return set(self.changed) | set(self.deleted)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.deleted)

    def summary(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed), "deleted": len(self.deleted),
                "unchanged": self.unchanged}


def doc_hashes(chunks: pa.Table) -> dict[str, str]:
    """doc_id -> doc_hash from a chunks table (every chunk of a document carries the same hash)."""
    ids, hashes = chunks.column("doc_id").to_pylist(), chunks.column("doc_hash").to_pylist()
    return dict(zip(ids, hashes, strict=True))


def diff(previous: dict[str, str], current: dict[str, str]) -> ChangeSet:
    """Compare doc_id -> content hash maps; lists keep ``current``'s order (deleted: ``previous``'s)."""
    changes = ChangeSet()
    for doc_id, h in current.items():
        old = previous.get(doc_id)
        if old is None:
            changes.added.append(doc_id)
        elif old != h:
            changes.changed.append(doc_id)
        else:
            changes.unchanged += 1
    changes.deleted = [d for d in previous if d not in current]
    return changes


def merge_chunks(previous: pa.Table, new_chunks: pa.Table, remove_docs: Iterable[str], doc_order: list[str]) -> pa.Table:
    """Previous chunks minus those of ``remove_docs``, plus ``new_chunks``, in corpus order.

    The result is the table a full re-chunk of the current corpus would give (same rows, same order), so
    an incremental refresh and a full one produce identical chunks artifacts.
    """
    removed = pa.array(sorted(set(remove_docs)), pa.string())
    kept = previous.filter(pc.invert(pc.is_in(previous.column("doc_id"), value_set=removed)))
    merged = pa.concat_tables([kept, new_chunks.cast(previous.schema)])
    position = pc.index_in(merged.column("doc_id"), value_set=pa.array(doc_order, pa.string()))
    if position.null_count:
        raise ValueError("merge_chunks: a chunk's document is not in the current corpus")
    order = pc.sort_indices(
        pa.table({"p": position, "i": merged.column("passage_index")}), sort_keys=[("p", "ascending"), ("i", "ascending")]
    )
    return merged.take(order)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system: a copy is still correct, only slower
        shutil.copy2(source, target)


def link_index(source: Path, target: Path) -> None:
    """Make ``target`` a copy of the Lucene index in ``source`` using hard links (copies across devices)."""
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.name not in _PRIVATE_FILES:
            _link_or_copy(f, target / f.name)


def link_tree(source: Path, target: Path) -> None:
    """A hard-linked copy of a file or folder (a copy across file systems); never written through afterwards."""
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source, target)
    else:
        shutil.copytree(source, target, copy_function=_link_or_copy)


def update_lucene_index(index_dir: Path, delete_ids: Iterable[str], docs: Iterable[Any],
                        threads: int = 1, build: Callable[..., int] = build_lucene_index) -> dict[str, int]:
    """Delete ``delete_ids`` from the Lucene index in ``index_dir``, then add ``docs``: (id, contents) pairs for
    BM25, or (id, {term: impact}) pairs with ``build=build_impact_index`` for a SPLADE impact index.

    New documents are indexed by Anserini into a scratch index (same analyzer and fields as a full build)
    and merged in with ``addIndexes``, so they are exactly the documents a full build would hold.
    """
    ensure_java()
    from pyserini.pyclass import autoclass

    File = autoclass("java.io.File")
    FSDirectory = autoclass("org.apache.lucene.store.FSDirectory")
    IndexWriter = autoclass("org.apache.lucene.index.IndexWriter")
    IndexWriterConfig = autoclass("org.apache.lucene.index.IndexWriterConfig")
    OpenMode = autoclass("org.apache.lucene.index.IndexWriterConfig$OpenMode")
    Term = autoclass("org.apache.lucene.index.Term")
    TermQuery = autoclass("org.apache.lucene.search.TermQuery")
    WhitespaceAnalyzer = autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer")

    with owned.temp_dir(prefix="irforge-delta-") as scratch:
        added = build(docs, Path(scratch) / "index", threads=threads)
        config = IndexWriterConfig(WhitespaceAnalyzer())  # no text is analysed here: deletes by id + addIndexes
        config.setOpenMode(OpenMode.APPEND)
        policy = autoclass("org.apache.lucene.index.TieredMergePolicy")()
        policy.setForceMergeDeletesPctAllowed(0.0)  # any segment with a deletion is rewritten (see the module doc)
        config.setMergePolicy(policy)
        writer = IndexWriter(FSDirectory.open(File(str(index_dir)).toPath()), config)
        try:
            deleted = 0
            for chunk_id in delete_ids:
                writer.deleteDocuments(TermQuery(Term("id", chunk_id)))  # Query... overload: pyjnius cannot pick Term...
                deleted += 1
            if added:
                delta = FSDirectory.open(File(str(Path(scratch) / "index")).toPath())
                writer.addIndexes(delta)
                delta.close()
            if deleted:  # rewrite the segments holding deleted chunks: BM25's statistics then count only live ones
                writer.forceMergeDeletes(True)
            writer.commit()
            live = writer.getDocStats().numDocs
        finally:
            writer.close()
    return {"deleted": deleted, "added": added, "documents": int(live)}
