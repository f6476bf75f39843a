"""Convert small classic test collections (CISI, MEDLINE) into BEIR layout, a second check besides Cranfield.

Output (under ``--out``)::

    corpus.jsonl      {"_id", "title", "text"}
    queries.jsonl     {"_id", "text"}          judged queries only (``--keep-unjudged`` keeps the rest)
    qrels/test.tsv    query-id<TAB>corpus-id<TAB>score, with that header line
    meta.json         source, sha256 of every raw file read, counts

Where the raw files come from
-----------------------------
Both are the SMART-format files of the Glasgow IR group's ``ir_test_collections`` tarballs (the files inside are
dated 1994-02-28; MED.REL 2000-11-30), as committed to the public GitHub repository
``lailaglez/belief-network-irs`` at commit 9094e4cde738bd93ed1747dc958b5acb0e0fa684 (HEAD of its snapshot;
the tarballs were added in f5096aa1af21702e40d93c56f673d22bd4d13094):

* ``cisi/cisi.tar.gz`` (775,144 bytes): CISI.ALL, CISI.QRY, CISI.REL (+ CISI.BLN, unused)
* ``med/med.tar.gz``   (375,183 bytes): MED.ALL, MED.QRY, MED.REL (+ MED.REL.OLD, the same pairs, unused)

Use the tarballs, not the loose files next to them: that repository's loose ``cisi/CISI.QRY`` and
``cisi/CISI.REL`` are edited copies (13 kB and 65 kB instead of 68 kB and 81 kB). The files of
``Shakiba-Alipour/Information-Retrieval-on-CISI`` (CISI.ALL/QRY/REL at the repository root, commit
13e80360b2c0ca10d3fbf537d3cb2a213c664c40) are byte-identical to the tarball's once CRLF line ends are removed,
and give the same output. To place the raw files (``--raw`` also takes the .tar.gz itself)::

    git --git-dir=<mirror of lailaglez/belief-network-irs> show 9094e4c:cisi/cisi.tar.gz | tar xzf - -C raw/cisi
    git --git-dir=<mirror of lailaglez/belief-network-irs> show 9094e4c:med/med.tar.gz | tar xzf - -C raw/med

Licence and notes
-----------------
The collections carry no explicit licence: they are freely distributed for research by the Glasgow IR group
(ir.dcs.gla.ac.uk/resources/test_collections) and the SMART project; the GitHub repository's MIT licence covers
its code, not the data. Use them for local evaluation only; the data (raw or converted) is never committed to
this repository: it lives outside git (e.g. /work/collections/).

What the conversion does
------------------------
* Document and query ids are the ``.I`` numbers as strings ("1".."1460"), as in BEIR's Cranfield.
* CISI documents: title = ``.T``, text = ``.W`` (abstract). Authors (``.A``), bibliographic data (``.B``),
  keywords/classes (``.K``/``.C``, one document) and citations (``.X``) are dropped.
* MED documents have only ``.W`` (lower-cased, title run into the abstract): title is "".
* Queries: the ``.W`` text only. CISI queries 58-112 (26 of the 76 judged) also carry ``.T``/``.A``/``.B`` (they
  were posed as a paper title plus abstract); those fields are dropped. Whitespace is collapsed to single spaces.
* Judgments are binary in both sources (CISI.REL's score columns are always ``0 0.000000``; MED.REL is TREC
  qrels with score 1); every listed pair is written with score 1, duplicates once.
* Queries without any judgment (CISI: 36 of 112) are left out of queries.jsonl unless ``--keep-unjudged``.
* A qrels row naming an unknown document or query, or counts differing from the known ones, is an error
  (``--no-verify`` skips the count check).

Usage::

    python benchmarks/collections.py cisi --raw /work/collections/raw/cisi --out /work/collections/cisi
    python benchmarks/collections.py med  --raw /work/collections/raw/med  --out /work/collections/med
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

SOURCE_REPO = "lailaglez/belief-network-irs"
SOURCE_COMMIT = "9094e4cde738bd93ed1747dc958b5acb0e0fa684"

# name -> raw file names, the tarball inside the source repo, known counts
COLLECTIONS = {
    "cisi": {
        "docs": "CISI.ALL", "queries": "CISI.QRY", "qrels": "CISI.REL", "archive": "cisi/cisi.tar.gz",
        "expect": {"docs": 1460, "queries": 112, "judged_queries": 76, "qrels": 3114},
    },
    "med": {
        "docs": "MED.ALL", "queries": "MED.QRY", "qrels": "MED.REL", "archive": "med/med.tar.gz",
        "expect": {"docs": 1033, "queries": 30, "judged_queries": 30, "qrels": 696},
    },
}

_ID_LINE = re.compile(r"^\.I\s+(\S+)\s*$")
_FIELD_LINE = re.compile(r"^\.([A-Z])\s*$")


class ConversionError(Exception):
    pass


def _read_raw(raw: Path, names: list[str]) -> dict[str, bytes]:
    """The named files from a directory or from a .tar.gz (members matched by base name)."""
    found: dict[str, bytes] = {}
    if raw.is_file():
        with tarfile.open(raw, "r:*") as tar:
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names:
                    found[base] = tar.extractfile(member).read()
    else:
        for name in names:
            path = raw / name
            if path.is_file():
                found[name] = path.read_bytes()
    missing = [n for n in names if n not in found]
    if missing:
        raise ConversionError(f"{raw}: missing {', '.join(missing)}")
    for name, data in found.items():
        if data.startswith(b"version https://git-lfs"):
            raise ConversionError(f"{raw}/{name} is a Git LFS pointer, not the file")
    return found


def _lines(data: bytes) -> list[str]:
    return data.decode("ascii", errors="replace").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_smart(data: bytes, what: str) -> dict[str, dict[str, str]]:
    """SMART-format records: ``.I <id>`` starts one, ``.X`` (a letter alone on its line) starts a field."""
    records: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    field = None
    for line_no, line in enumerate(_lines(data), start=1):
        m = _ID_LINE.match(line)
        if m:
            rid = m.group(1)
            if rid in records:
                raise ConversionError(f"{what}:{line_no}: duplicate record .I {rid}")
            current, field = {}, None
            records[rid] = current  # filled in place, joined below
            continue
        m = _FIELD_LINE.match(line)
        if m and current is not None:
            field = m.group(1)
            current.setdefault(field, [])
            continue
        if current is None or field is None:
            if line.strip():
                raise ConversionError(f"{what}:{line_no}: text outside a record field: {line[:60]!r}")
            continue
        current[field].append(line)
    return {rid: {f: " ".join(" ".join(ls).split()) for f, ls in rec.items()} for rid, rec in records.items()}


def parse_qrels(data: bytes, name: str, what: str) -> list[tuple[str, str]]:
    """(query id, doc id) pairs, in file order, duplicates dropped."""
    pairs: list[tuple[str, str]] = []
    seen = set()
    for line_no, line in enumerate(_lines(data), start=1):
        cols = line.split()
        if not cols:
            continue
        if name == "cisi":  # "qid docid 0 0.000000"
            if len(cols) != 4:
                raise ConversionError(f"{what}:{line_no}: expected 4 columns, found {len(cols)}")
            pair = (cols[0], cols[1])
        else:  # med: TREC qrels "qid 0 docid 1"
            if len(cols) != 4 or int(cols[3]) <= 0:
                raise ConversionError(f"{what}:{line_no}: expected 'qid 0 docid <positive score>': {line!r}")
            pair = (cols[0], cols[2])
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def convert(name: str, raw: Path, out: Path, keep_unjudged: bool = False, verify: bool = True) -> dict:
    spec = COLLECTIONS[name]
    files = _read_raw(raw, [spec["docs"], spec["queries"], spec["qrels"]])

    docs = parse_smart(files[spec["docs"]], spec["docs"])
    queries = parse_smart(files[spec["queries"]], spec["queries"])
    pairs = parse_qrels(files[spec["qrels"]], name, spec["qrels"])

    corpus = []
    for did, rec in docs.items():
        title, text = rec.get("T", ""), rec.get("W", "")
        if not (title or text):
            raise ConversionError(f"{spec['docs']}: document {did} has neither title nor text")
        corpus.append({"_id": did, "title": title, "text": text})
    query_text = {}
    for qid, rec in queries.items():
        if not rec.get("W"):
            raise ConversionError(f"{spec['queries']}: query {qid} has no .W text")
        query_text[qid] = rec["W"]

    bad_docs = sorted({d for _, d in pairs if d not in docs}, key=int)
    bad_queries = sorted({q for q, _ in pairs if q not in query_text}, key=int)
    if bad_docs or bad_queries:
        raise ConversionError(f"qrels name unknown documents {bad_docs[:10]} / queries {bad_queries[:10]}")

    judged = {q for q, _ in pairs}
    unjudged = [q for q in query_text if q not in judged]
    kept = [q for q in query_text if keep_unjudged or q in judged]
    stats = {
        "docs": len(corpus), "queries": len(query_text), "judged_queries": len(judged), "qrels": len(pairs),
        "queries_written": len(kept), "unjudged_query_ids": unjudged,
        "mean_judged_per_query": round(len(pairs) / len(judged), 2),
        "empty_titles": sum(not d["title"] for d in corpus), "empty_texts": sum(not d["text"] for d in corpus),
        "grades": "binary (1)",
    }
    if verify:
        wrong = {k: (stats[k], v) for k, v in spec["expect"].items() if stats[k] != v}
        if wrong:
            raise ConversionError(f"counts differ from the known ones (found, expected): {wrong}")

    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc in corpus:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid in kept:
            f.write(json.dumps({"_id": qid, "text": query_text[qid]}, ensure_ascii=False) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8", newline="") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, d in pairs:
            f.write(f"{q}\t{d}\t1\n")
    meta = {
        "collection": name,
        "source": {"repo": SOURCE_REPO, "commit": SOURCE_COMMIT, "archive": spec["archive"]},
        "raw": str(raw),
        "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())},
        "stats": stats,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return stats


def check(out: Path) -> dict:
    """Re-read the written files and check them against each other."""
    doc_ids = set()
    with open(out / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            doc_ids.add(json.loads(line)["_id"])
    query_ids = set()
    with open(out / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            query_ids.add(json.loads(line)["_id"])
    rows = 0
    judged = set()
    with open(out / "qrels" / "test.tsv", encoding="utf-8") as f:
        if f.readline().rstrip("\n") != "query-id\tcorpus-id\tscore":
            raise ConversionError("qrels/test.tsv: bad header")
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            if d not in doc_ids or q not in query_ids or int(s) < 1:
                raise ConversionError(f"qrels/test.tsv: bad row {line!r}")
            judged.add(q)
            rows += 1
    return {"corpus_ids": len(doc_ids), "query_ids": len(query_ids), "qrels_rows": rows,
            "judged_queries": len(judged), "queries_without_judgments": len(query_ids - judged)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("name", choices=sorted(COLLECTIONS))
    parser.add_argument("--raw", type=Path, required=True, help="folder with the raw files, or the .tar.gz")
    parser.add_argument("--out", type=Path, required=True, help="output folder (BEIR layout)")
    parser.add_argument("--keep-unjudged", action="store_true", help="also write queries without judgments")
    parser.add_argument("--no-verify", action="store_true", help="skip the check against the known counts")
    args = parser.parse_args(argv)
    try:
        stats = convert(args.name, args.raw, args.out, args.keep_unjudged, not args.no_verify)
        checked = check(args.out)
    except (ConversionError, OSError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"collection": args.name, "out": str(args.out), **stats, "check": checked}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
