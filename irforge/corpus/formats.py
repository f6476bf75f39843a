"""HTML, PDF and Word documents as titled blocks under headings, like Markdown (:mod:`irforge.corpus.markdown`).

- **HTML** (BeautifulSoup with Python's own parser): scripts, styles and page furniture (nav, header, footer,
  aside, forms) are dropped; headings build the section path; paragraphs, list items, table rows, definition
  terms, quotes and figure captions are text blocks; ``pre`` is a code block; the title is ``<title>``, else the
  first heading.
- **PDF** (pypdf): each page's text, cut into paragraphs at blank lines (a PDF has no heading structure to read
  reliably, so its passages carry no section); the title is the document's metadata title, else its first line.
  A PDF with no extractable text (scanned images) is a bad row, not an empty document.
- **Word .docx** (python-docx): "Heading N" paragraphs build the section path, the "Title" paragraph (or the core
  properties' title) names the document, other paragraphs and table rows are text blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

from irforge.corpus.markdown import SEPARATOR, Block, ParsedDocument

_HEADING = re.compile(r"h([1-6])")
_HTML_BLOCKS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "tr", "dt", "dd", "blockquote", "figcaption",
                "caption")
_HTML_FURNITURE = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "svg")


def _path_text(path: list[tuple[int, str]]) -> str:
    return SEPARATOR.join(h for _, h in path)


def _enter(path: list[tuple[int, str]], level: int, text: str) -> list[tuple[int, str]]:
    return [(lv, h) for lv, h in path if lv < level] + [(level, text)]


def parse_html(source: str, fallback_title: str, code: str = "keep") -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(source, "html.parser")
    for tag in soup(_HTML_FURNITURE):
        tag.decompose()
    root = soup.body or soup
    links = [str(a["href"]) for a in root.find_all("a", href=True)]
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    first_heading = ""
    for tag in root.find_all(_HTML_BLOCKS):
        if any(parent.name in _HTML_BLOCKS for parent in tag.parents):  # the outermost block holds its text
            continue
        heading = _HEADING.fullmatch(tag.name)
        if heading:
            text = " ".join(tag.get_text().split())
            if text:
                path = _enter(path, int(heading.group(1)), text)
                first_heading = first_heading or text
            continue
        if tag.name == "pre":
            if code == "keep" and tag.get_text().strip():
                blocks.append(Block(tag.get_text().strip("\n"), _path_text(path), code=True))
            continue
        cells = tag.find_all(["td", "th"]) if tag.name == "tr" else None
        text = " | ".join(" ".join(c.get_text().split()) for c in cells) if cells else " ".join(tag.get_text().split())
        if text:
            blocks.append(Block(text, _path_text(path)))
    title = " ".join(soup.title.get_text(" ").split()) if soup.title else ""
    return ParsedDocument(title or first_heading or fallback_title, blocks, links)


class UnreadableDocument(ValueError):
    """A file whose format is right but whose text cannot be had (encrypted, scanned, corrupt)."""


def parse_pdf(path: Path, fallback_title: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise UnreadableDocument("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, OSError, ValueError, KeyError) as e:
        if isinstance(e, UnreadableDocument):
            raise
        raise UnreadableDocument(f"unreadable PDF ({e})") from e
    blocks = [Block(" ".join(par.split()), "") for page in pages for par in re.split(r"\n\s*\n", page) if par.strip()]
    if not blocks:
        raise UnreadableDocument("no extractable text (a scanned PDF needs OCR first)")
    return ParsedDocument(str(meta_title).strip() or blocks[0].text[:120] or fallback_title, blocks)


def parse_docx(path: Path, fallback_title: str) -> ParsedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as e:
        raise UnreadableDocument(f"unreadable .docx ({e})") from e
    from docx.table import Table

    blocks: list[Block] = []
    path_: list[tuple[int, str]] = []
    title = (document.core_properties.title or "").strip()
    for item in document.iter_inner_content():  # paragraphs and tables in document order
        if isinstance(item, Table):
            for row in item.rows:
                text = " | ".join(" ".join(cell.text.split()) for cell in row.cells)
                if text.strip(" |"):
                    blocks.append(Block(text, _path_text(path_)))
            continue
        text = " ".join(item.text.split())
        style = item.style.name if item.style is not None else ""
        if not text:
            continue
        if style == "Title":
            title = title or text
        elif style.startswith("Heading"):
            level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            path_ = _enter(path_, level, text)
        else:
            blocks.append(Block(text, _path_text(path_)))
    first_heading = next((h for _, h in path_[:1]), "")
    return ParsedDocument(title or first_heading or fallback_title, blocks)
