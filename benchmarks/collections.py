"""Convert small classic test collections (CISI, MEDLINE, ADI, CACM, NPL, TIME) into BEIR layout, checks besides Cranfield.

Output (under ``--out``)::

    corpus.jsonl      {"_id", "title", "text"}
    queries.jsonl     {"_id", "text"}          judged queries only (``--keep-unjudged`` keeps the rest)
    qrels/test.tsv    query-id<TAB>corpus-id<TAB>score, with that header line
    meta.json         source, sha256 of every raw file read, counts

=========  ==================================  ======  =======  ===============  ===========
name       field                               docs    queries  judged queries   qrels rows
=========  ==================================  ======  =======  ===============  ===========
cisi       library and information science     1,460   112      76               3,114
med        medicine (MEDLINE abstracts)        1,033   30       30               696
adi        documentation (ADI, 1960s papers)   82      35       35               170
cacm       computer science (CACM 1958-1979)   3,204   64       52               796
npl        electrical engineering (NPL)        11,429  93       93               2,083
time       news (TIME magazine, 1963)          423     83       83               324
=========  ==================================  ======  =======  ===============  ===========

All six are the Glasgow IR group's / SMART project's distributions (ir.dcs.gla.ac.uk/resources/test_collections),
which cannot be downloaded here; the raw files come from public GitHub repositories that committed them. Each
copy below was checked against other copies (and the collection's own README or ir_datasets' tests where there
is one): student repositories often carry edited files, so the sources were picked file by file.

Where the raw files come from
-----------------------------
**CISI, MED, ADI** are the SMART-format files of the Glasgow tarballs (the files inside are dated 1994-02-28;
MED.REL 2000-11-30), as committed to the public GitHub repository ``lailaglez/belief-network-irs`` at commit
9094e4cde738bd93ed1747dc958b5acb0e0fa684 (HEAD of its snapshot; the tarballs were added in
f5096aa1af21702e40d93c56f673d22bd4d13094):

* ``cisi/cisi.tar.gz`` (775,144 bytes): CISI.ALL, CISI.QRY, CISI.REL (+ CISI.BLN, unused)
* ``med/med.tar.gz``   (375,183 bytes): MED.ALL, MED.QRY, MED.REL (+ MED.REL.OLD, the same pairs, unused)
* ``adi/adi.tar.gz``   (17,307 bytes; sha256 below): ADI.ALL, ADI.QRY, ADI.REL (+ ADI.BLN, unused);
  CRLF line ends. The loose ``adi/ADI.ALL`` and ``adi/ADI.REL`` next to it are the same bytes; the loose
  ``adi/ADI.QRY`` lacks the tarball's two trailing blank lines (same output).

Use the tarballs, not the loose files next to them: that repository's loose ``cisi/CISI.QRY`` and
``cisi/CISI.REL`` are edited copies (13 kB and 65 kB instead of 68 kB and 81 kB). The files of
``Shakiba-Alipour/Information-Retrieval-on-CISI`` (CISI.ALL/QRY/REL at the repository root, commit
13e80360b2c0ca10d3fbf537d3cb2a213c664c40) are byte-identical to the tarball's once CRLF line ends are removed,
and give the same output. To place the raw files (``--raw`` also takes the .tar.gz itself)::

    git --git-dir=<mirror of lailaglez/belief-network-irs> show 9094e4c:cisi/cisi.tar.gz | tar xzf - -C raw/cisi
    git --git-dir=<mirror of lailaglez/belief-network-irs> show 9094e4c:med/med.tar.gz | tar xzf - -C raw/med
    git --git-dir=<mirror of lailaglez/belief-network-irs> show 9094e4c:adi/adi.tar.gz | tar xzf - -C raw/adi

**CACM** (Communications of the ACM titles/abstracts, 1958-1979; Fox 1983): ``Hamza5/RI-TP`` at commit
b362e149af06f9ed6278d71d36752d66e33b2a9d (HEAD; the files were added in 4c078a0a and are the same blobs at
HEAD), folder ``cacm/``: cacm.all, query.text, qrels.text (+ README, cite.info, common_words, unused). Its
cacm.all (2,187,734 bytes), qrels.text (9,948) and common_words (2,668) have exactly the sizes that the
tarball's own README lists. Every other copy looked at is edited: ``charlesdlrsa/moteur_recherche_fri`` (CRLF,
``.I 2856`` split over two lines), ``atcherepanov/Stemming-Algorithm`` ("insof ar" corrected, query 4 joined
into one line), ``S1naHeidari/inverted_index`` and ``kavinsan/Information-Retrieval-Project`` (stray lines
appended), ``cw417/inverted-index-search`` (a title edited), and Hamza5's own intermediate commit faebe91
(document 1 rewritten; reverted in 009fe6f). query.text is 13,684 bytes where the README says 13,689: the
copies of ``kavinsan/...`` and ``S1naHeidari/...`` have those 5 bytes as a final ``.I 0`` line with no fields.
Such an empty final record is dropped (below), so both give the same output.

**NPL** (the National Physical Laboratory collection, electrical-engineering abstracts; "Vaswani" in
ir_datasets): ``KPlanisphere/query-document-processing`` at commit 9926eaf2aedb7fb735ccad05d4c0c1d971edd7e3
(its only commit), folder ``npl/``: doc-text, query-text, rlv-ass (+ term/vector files, unused; the repository
also lists npl.tar.gz, but the snapshot lacks that blob). These match ir_datasets' integration test for
``vaswani`` (11,429 documents, 93 queries, 2,083 qrels, and its sample records). The doc-text of
``IoannaT/XML-Document-Parsing-TermFrequencyAnalyzer`` (c2761178) differs only by one leading space and the
final newline (same output); the doc-text of ``stefreschke/Information-Retrieval`` lacks documents 6984, 8139 and
8143 (the count check fails on it).

**TIME** (TIME magazine world-affairs articles of 1963): ``Chaplinski/IR-Assignment3`` at commit
62fe0939662f793e48ac91f7b99d1cf724d7e862 (HEAD; files unchanged since 7586dbc4 where they were added), folder
``time/``: TIME.ALL, TIME.QUE, TIME.REL (+ TIME.STP, the stop list, unused). ``wassilaOuerdane/
ST4_CS_Lab0_2021_2022`` (c44ee61d, ``Data/Time/``) has the same TIME.REL, a TIME.QUE differing only in line
breaks inside query 1 (same output), and a TIME.ALL that lost one of the 148 end-of-line ``/`` marks (at
"SLUMBER . /"); ``cchapman82/ClusterRecommender`` has a TIME.ALL with normalised ``*TEXT`` header lines.

To place the raw files of CACM, NPL and TIME (``<mirror>``: a clone of the repository named above)::

    for f in cacm.all query.text qrels.text; do git --git-dir=<mirror> show b362e14:cacm/$f > raw/cacm/$f; done
    for f in doc-text query-text rlv-ass; do git --git-dir=<mirror> show 9926eaf:npl/$f > raw/npl/$f; done
    for f in TIME.ALL TIME.QUE TIME.REL; do git --git-dir=<mirror> show 62fe093:time/$f > raw/time/$f; done

sha256 of the raw files read (all also written to meta.json)::

    adi   adi.tar.gz 68c1867824cbad9e28ce498fafa644d5ac1a7a8a41cde0bffaf402095bbc7aa6
    adi   ADI.ALL    7154f3d91194ca290e306da8803b24eef311064479ec33ab88dac7a9ecd4a3fa
          ADI.QRY    845e2691fe54018e1ab3b8251c3b0b07e87aa5229de7b91f0c2d426ccdf92e61
          ADI.REL    8c75a2e1f0f02011ba1e6b25893d70ddd2f5602fc9a694a2ab6781e0ec66d745
    cacm  cacm.all   34bdd3eb27a92e5f8068a785b53ef40b9dc0b800dbafc5bac79a80dd999cdc17
          query.text ca004f06b57cb8a298c73bf55793174e50ff32fc83c5bb5f10ed2ed559f621e6
          qrels.text da4202b0c70cad7d91c9a028eaf8cbd0a4ca981ebdc3955eb75ba7b6de6f185c
    npl   doc-text   9a9a396da453eb0a6c659b1399ae6c551d11d04a68b6f0a4e21fc757e77c398f
          query-text 0f5e9a179334183cc3b04fe24d9bdfc3f656b08330e6798d8df5dc621bf8e6d5
          rlv-ass    1af78732abed49055218c1548c27cfa354c5d02a9b6c9cb854b9d0b74fcce24c
    time  TIME.ALL   b8ae908cff6f1d5d1ed77958accc2b890c6a94ab2d15748af80c2b2ac7466ab6
          TIME.QUE   959fd8a1e2096ad5b0d0570cf7938555f42e66443cc89972e2638eb623d36fad
          TIME.REL   e7f3c69bde95fe05e757db6c60f262608028945cd0f9c1fcba4cb116abcc1539

Licence and notes
-----------------
The collections carry no explicit licence: they are freely distributed for research by the Glasgow IR group
(ir.dcs.gla.ac.uk/resources/test_collections) and the SMART project; the GitHub repositories' licences (where
there is one) cover their code, not the data. Use them for local evaluation only; the data (raw or converted) is
never committed to this repository: it lives outside git (e.g. /work/collections/).

What the conversion does
------------------------
* Document and query ids are the source's numbers as strings ("1".."1460"), as in BEIR's Cranfield; leading
  zeros are dropped (CACM's qrels.text writes queries as "01".."64").
* CISI documents: title = ``.T``, text = ``.W`` (abstract). Authors (``.A``), bibliographic data (``.B``),
  keywords/classes (``.K``/``.C``, one document) and citations (``.X``) are dropped.
* MED documents have only ``.W`` (lower-cased, title run into the abstract): title is "".
* ADI documents: title = ``.T``, text = ``.W``; authors (``.A``) dropped. Document 67 gives its ``.T`` twice
  (the second with a leading space): a repeated field with the same text is kept once.
* CACM documents: title = ``.T``, text = ``.W`` (abstract; 1,617 of the 3,204 documents have none, so their
  text is ""). Dropped: ``.B`` (issue and date), ``.A`` (authors), ``.N`` (entry stamp), ``.X`` (citation
  links), ``.K`` (keywords, 1,429 documents) and ``.C`` (CR categories, 1,425). Queries keep ``.W``; their
  ``.N`` (the requester) and ``.A`` (author names, 8 queries, also named in the ``.W`` text) are dropped.
  12 of the 64 queries have no judgment.
* NPL: records are separated by lines holding only ``/``; a record is its number, then its text. Documents are
  lower-case title and abstract run together, without punctuation: title is "", text is the record's text.
  Queries are upper-case. rlv-ass lists, per query, the relevant document numbers.
* TIME: TIME.ALL holds ``*TEXT <n> <date> PAGE <p>`` header lines each followed by one article (upper-case,
  headline run into the text; 148 lines end with a ``/`` mark, kept), ended by ``*STOP``; the header line
  (article number, date, page) is dropped and title is "". Queries: ``*FIND <n>`` blocks of TIME.QUE.
  TIME.REL: one line per query, its number then the relevant documents.
* TIME document ids: TIME.REL numbers the documents 1..425 by position, not by ``*TEXT`` number, but TIME.ALL
  (every copy seen) holds 423 articles: two that the judgments count are absent. They are ``*TEXT`` 499 and
  500: the ``*TEXT`` numbers jump from 498 (article 370) to 501, and from there on the judgments fit the article
  two positions earlier. With plain positions, the 34 judged pairs naming documents 373..425 share on average
  0.79 non-stop query words with the article named (19 share none) against 4.91 (none share none) with the
  article two earlier, while the 290 pairs naming 1..370 share 4.57 either way; no judgment names 371..372.
  So the ids are the positions counting the absent articles: "1".."370", then "373".."425" (``absent_texts``;
  numbering by position alone would leave rows naming 424 and 425, an error, and mislabel 31 pairs).
* Queries: the query text only (SMART: ``.W``). CISI queries 58-112 (26 of the 76 judged) also carry
  ``.T``/``.A``/``.B`` (they were posed as a paper title plus abstract); those fields are dropped. Whitespace is
  collapsed to single spaces everywhere.
* A SMART file's last record with no field at all (CACM's optional ``.I 0`` end line) is dropped.
* Judgments are binary in all sources (CISI.REL, ADI.REL, qrels.text: score columns always ``0 0`` or
  ``0 0.000000``; MED.REL is TREC qrels with score 1; NPL and TIME list relevant documents only); every listed
  pair is written with score 1, duplicates once.
* Queries without any judgment (CISI: 36 of 112, CACM: 12 of 64) are left out of queries.jsonl unless
  ``--keep-unjudged``.
* A qrels row naming an unknown document or query, or counts differing from the known ones, is an error
  (``--no-verify`` skips the count check).

Usage::

    python benchmarks/collections.py cisi --raw /work/collections/raw/cisi --out /work/collections/cisi
    python benchmarks/collections.py med  --raw /work/collections/raw/med  --out /work/collections/med
    python benchmarks/collections.py adi  --raw /work/collections/raw/adi  --out /work/collections/adi
    python benchmarks/collections.py cacm --raw /work/collections/raw/cacm --out /work/collections/cacm
    python benchmarks/collections.py npl  --raw /work/collections/raw/npl  --out /work/collections/npl
    python benchmarks/collections.py time --raw /work/collections/raw/time --out /work/collections/time
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

# name -> raw file names, record format, where they come from, known counts. "archive": the tarball inside
# SOURCE_REPO; "source": another repository and the folder holding the files.
COLLECTIONS = {
    "cisi": {
        "docs": "CISI.ALL", "queries": "CISI.QRY", "qrels": "CISI.REL", "archive": "cisi/cisi.tar.gz",
        "format": "smart", "qrels_format": "smart",
        "expect": {"docs": 1460, "queries": 112, "judged_queries": 76, "qrels": 3114},
    },
    "med": {
        "docs": "MED.ALL", "queries": "MED.QRY", "qrels": "MED.REL", "archive": "med/med.tar.gz",
        "format": "smart", "qrels_format": "trec",
        "expect": {"docs": 1033, "queries": 30, "judged_queries": 30, "qrels": 696},
    },
    "adi": {
        "docs": "ADI.ALL", "queries": "ADI.QRY", "qrels": "ADI.REL", "archive": "adi/adi.tar.gz",
        "format": "smart", "qrels_format": "smart", "dedupe_fields": True,
        "expect": {"docs": 82, "queries": 35, "judged_queries": 35, "qrels": 170},
    },
    "cacm": {
        "docs": "cacm.all", "queries": "query.text", "qrels": "qrels.text",
        "source": {"repo": "Hamza5/RI-TP", "commit": "b362e149af06f9ed6278d71d36752d66e33b2a9d", "folder": "cacm"},
        "format": "smart", "qrels_format": "smart",
        "expect": {"docs": 3204, "queries": 64, "judged_queries": 52, "qrels": 796},
    },
    "npl": {
        "docs": "doc-text", "queries": "query-text", "qrels": "rlv-ass",
        "source": {"repo": "KPlanisphere/query-document-processing",
                   "commit": "9926eaf2aedb7fb735ccad05d4c0c1d971edd7e3", "folder": "npl"},
        "format": "npl", "qrels_format": "npl",
        "expect": {"docs": 11429, "queries": 93, "judged_queries": 93, "qrels": 2083},
    },
    "time": {
        "docs": "TIME.ALL", "queries": "TIME.QUE", "qrels": "TIME.REL",
        "source": {"repo": "Chaplinski/IR-Assignment3", "commit": "62fe0939662f793e48ac91f7b99d1cf724d7e862",
                   "folder": "time"},
        "format": "time", "qrels_format": "time", "absent_texts": [499, 500],
        "expect": {"docs": 423, "queries": 83, "judged_queries": 83, "qrels": 324},
    },
}

_ID_LINE = re.compile(r"^\.I\s+(\S+)\s*$")
_FIELD_LINE = re.compile(r"^\.([A-Z])\s*$")
_NUMBER = re.compile(r"^\d+$")
_TIME_TEXT = re.compile(r"^\*TEXT\s+(\d+)\b")
_TIME_FIND = re.compile(r"^\*FIND\s+(\d+)\s*$")


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


def _collapse(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


def _number(token: str, what: str, line_no: int) -> str:
    """A record number as the id string: digits only, leading zeros dropped."""
    if not _NUMBER.match(token):
        raise ConversionError(f"{what}:{line_no}: expected a number, found {token!r}")
    return str(int(token))


def parse_smart(data: bytes, what: str, dedupe: bool = False) -> dict[str, dict[str, str]]:
    """SMART-format records: ``.I <id>`` starts one, ``.X`` (a letter alone on its line) starts a field.

    A field given twice is joined, or with ``dedupe`` kept once where both give the same text. A last record
    with no field at all (an end marker such as ``.I 0``) is dropped.
    """
    records: dict[str, dict[str, list[list[str]]]] = {}
    current: dict[str, list[list[str]]] | None = None
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
            current.setdefault(field, []).append([])
            continue
        if current is None or field is None:
            if line.strip():
                raise ConversionError(f"{what}:{line_no}: text outside a record field: {line[:60]!r}")
            continue
        current[field][-1].append(line)
    if records:
        last = next(reversed(records))
        if not records[last]:
            del records[last]
    out: dict[str, dict[str, str]] = {}
    for rid, rec in records.items():
        fields = {}
        for f, segments in rec.items():
            texts = [_collapse(seg) for seg in segments]
            if dedupe:
                texts = list(dict.fromkeys(texts))
            fields[f] = " ".join(t for t in texts if t)
        out[rid] = fields
    return out


def _slash_blocks(data: bytes, what: str) -> list[tuple[int, list[str]]]:
    """NPL records: blocks of lines ended by a line holding only ``/`` (the last one may lack it)."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for line_no, line in enumerate(_lines(data), start=1):
        if line.strip() == "/":
            if not current:
                raise ConversionError(f"{what}:{line_no}: empty record")
            blocks.append((start, current))
            current = []
        elif line.strip():
            if not current:
                start = line_no
            current.append(line)
    if current:
        blocks.append((start, current))
    return blocks


def parse_npl(data: bytes, what: str) -> dict[str, str]:
    """NPL doc-text / query-text: id -> text (the record's first line is its number)."""
    records: dict[str, str] = {}
    for line_no, lines in _slash_blocks(data, what):
        rid = _number(lines[0].strip(), what, line_no)
        if rid in records:
            raise ConversionError(f"{what}:{line_no}: duplicate record {rid}")
        records[rid] = _collapse(lines[1:])
    return records


def parse_time(data: bytes, what: str, marker: re.Pattern) -> list[tuple[str, str]]:
    """TIME.ALL / TIME.QUE: (number after the marker, text) per record, in file order; ``*STOP`` ends the file."""
    records: list[tuple[str, list[str]]] = []
    stopped = False
    for line_no, line in enumerate(_lines(data), start=1):
        if stopped:
            if line.strip():
                raise ConversionError(f"{what}:{line_no}: text after *STOP: {line[:60]!r}")
            continue
        if line.strip() == "*STOP":
            stopped = True
            continue
        m = marker.match(line)
        if m:
            records.append((str(int(m.group(1))), []))
            continue
        if line.startswith("*"):
            raise ConversionError(f"{what}:{line_no}: unexpected marker line {line[:60]!r}")
        if not records:
            if line.strip():
                raise ConversionError(f"{what}:{line_no}: text before the first record: {line[:60]!r}")
            continue
        records[-1][1].append(line)
    if not stopped:
        raise ConversionError(f"{what}: no *STOP line (truncated file?)")
    return [(rid, _collapse(lines)) for rid, lines in records]


def parse_qrels(data: bytes, fmt: str, what: str) -> list[tuple[str, str]]:
    """(query id, doc id) pairs, in file order, duplicates dropped."""
    raw_pairs: list[tuple[str, str]] = []
    if fmt == "npl":  # per query: its number, then the relevant documents, then "/"
        for line_no, lines in _slash_blocks(data, what):
            tokens = " ".join(lines).split()
            qid = _number(tokens[0], what, line_no)
            raw_pairs += [(qid, _number(t, what, line_no)) for t in tokens[1:]]
    else:
        for line_no, line in enumerate(_lines(data), start=1):
            cols = line.split()
            if not cols:
                continue
            if fmt == "smart":  # "qid docid 0 0" (CISI, ADI: "qid docid 0 0.000000")
                if len(cols) != 4:
                    raise ConversionError(f"{what}:{line_no}: expected 4 columns, found {len(cols)}")
                if float(cols[2]) != 0 or float(cols[3]) != 0:
                    raise ConversionError(f"{what}:{line_no}: graded judgment where binary expected: {line!r}")
                raw_pairs.append((_number(cols[0], what, line_no), _number(cols[1], what, line_no)))
            elif fmt == "trec":  # med: TREC qrels "qid 0 docid 1"
                if len(cols) != 4 or int(cols[3]) <= 0:
                    raise ConversionError(f"{what}:{line_no}: expected 'qid 0 docid <positive score>': {line!r}")
                raw_pairs.append((_number(cols[0], what, line_no), _number(cols[2], what, line_no)))
            elif fmt == "time":  # "qid doc doc ...", one line per query
                qid = _number(cols[0], what, line_no)
                if len(cols) < 2:
                    raise ConversionError(f"{what}:{line_no}: query {qid} lists no documents")
                raw_pairs += [(qid, _number(t, what, line_no)) for t in cols[1:]]
            else:
                raise ValueError(fmt)
    pairs: list[tuple[str, str]] = []
    seen = set()
    for pair in raw_pairs:
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def _documents(spec: dict, data: bytes) -> list[dict]:
    what = spec["docs"]
    if spec["format"] == "smart":
        docs = parse_smart(data, what, spec.get("dedupe_fields", False))
        corpus = [{"_id": did, "title": rec.get("T", ""), "text": rec.get("W", "")} for did, rec in docs.items()]
    elif spec["format"] == "npl":
        corpus = [{"_id": did, "title": "", "text": text} for did, text in parse_npl(data, what).items()]
    elif spec["format"] == "time":  # ids: the position in the file counting the absent articles, as TIME.REL does
        records = parse_time(data, what, _TIME_TEXT)
        numbers = [int(n) for n, _ in records]
        if any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise ConversionError(f"{what}: the *TEXT numbers do not increase")
        absent = spec.get("absent_texts", [])
        if set(absent) & set(numbers):
            raise ConversionError(f"{what}: an article taken as absent is there: {sorted(set(absent) & set(numbers))}")
        corpus = [{"_id": str(i + sum(a < n for a in absent)), "title": "", "text": text}
                  for i, (n, (_, text)) in enumerate(zip(numbers, records), start=1)]
    else:
        raise ValueError(spec["format"])
    for doc in corpus:
        if not (doc["title"] or doc["text"]):
            raise ConversionError(f"{what}: document {doc['_id']} has neither title nor text")
    return corpus


def _queries(spec: dict, data: bytes) -> dict[str, str]:
    what = spec["queries"]
    if spec["format"] == "smart":
        texts = {qid: rec.get("W", "") for qid, rec in parse_smart(data, what).items()}
    elif spec["format"] == "npl":
        texts = parse_npl(data, what)
    elif spec["format"] == "time":
        records = parse_time(data, what, _TIME_FIND)
        texts = dict(records)
        if len(texts) != len(records):
            raise ConversionError(f"{what}: a *FIND number occurs twice")
    else:
        raise ValueError(spec["format"])
    for qid, text in texts.items():
        if not text:
            raise ConversionError(f"{what}: query {qid} has no text")
    return texts


def convert(name: str, raw: Path, out: Path, keep_unjudged: bool = False, verify: bool = True) -> dict:
    spec = COLLECTIONS[name]
    files = _read_raw(raw, [spec["docs"], spec["queries"], spec["qrels"]])

    corpus = _documents(spec, files[spec["docs"]])
    query_text = _queries(spec, files[spec["queries"]])
    pairs = parse_qrels(files[spec["qrels"]], spec["qrels_format"], spec["qrels"])

    doc_ids = {d["_id"] for d in corpus}
    if len(doc_ids) != len(corpus):
        raise ConversionError(f"{spec['docs']}: duplicate document ids")
    bad_docs = sorted({d for _, d in pairs if d not in doc_ids}, key=int)
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
    if "source" in spec:
        src = spec["source"]
        source = {"repo": src["repo"], "commit": src["commit"],
                  "paths": [f"{src['folder']}/{spec[k]}" for k in ("docs", "queries", "qrels")]}
    else:
        source = {"repo": SOURCE_REPO, "commit": SOURCE_COMMIT, "archive": spec["archive"]}
    meta = {
        "collection": name,
        "source": source,
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
    except (ConversionError, OSError, tarfile.TarError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"collection": args.name, "out": str(args.out), **stats, "check": checked}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
