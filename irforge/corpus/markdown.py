"""Markdown documents read by structure (markdown-it-py + mdit-py-plugins), not as plain text.

What a search index and a query generator should see of a documentation page is its prose, under the headings
it sits in: so YAML front matter is metadata (its ``title`` names the page), heading anchors (``{ #id }``) and
attribute lists are dropped, a link keeps its text and its URL goes to the document's links, inline and block
HTML keep only their text, code blocks are kept whole (``code: keep``) or dropped, admonitions (``!!! note``,
``/// tip``) read as text, tables as rows of cells, and MkDocs include directives (``{* file *}``) and Jinja
markup are removed. Each block carries its heading path (``Guide > Proxies``), which the chunker records per
passage (the ``section`` column) and shows with the title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import yaml

_ANCHOR = re.compile(r"\s*\{\s*[#.:][^}]*\}\s*$")  # "{ #behind-a-proxy }", "{: .class }" after a heading
_INCLUDE = re.compile(r"\{\*.*?\*\}|\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", re.DOTALL)  # includes and Jinja
_BLOCK_FENCE = re.compile(r"^\s*///\s*([\w-]*)\s*(?:\|\s*(.*))?$")  # pymdownx blocks: "/// tip | Title", "///"
SEPARATOR = " > "


@dataclass
class Block:
    text: str
    section: str  # heading path, outermost first ("" before the first heading)
    code: bool = False


@dataclass
class ParsedDocument:
    title: str
    blocks: list[Block]
    links: list[str] = field(default_factory=list)
    front_matter: dict = field(default_factory=dict)


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def _parser():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.admon import admon_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin

    return MarkdownIt("commonmark").use(front_matter_plugin).use(admon_plugin).enable("table")


def _inline_text(token, links: list[str]) -> str:
    """The readable text of an inline token: link text kept (URL recorded), HTML stripped, images by alt text."""
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "link_open":
            href = child.attrs.get("href")
            if href:
                links.append(str(href))
        elif child.type == "image":
            parts.append(child.content)  # its alt text
        elif child.type == "html_inline":
            continue
    text = _INCLUDE.sub("", "".join(parts))
    return " ".join(text.split())


def _unwrap_block_fences(source: str) -> str:
    """``/// tip | Title`` ... ``///`` (pymdownx blocks) become their title and content."""
    out = []
    for line in source.split("\n"):
        m = _BLOCK_FENCE.match(line)
        if m:
            title = (m.group(2) or m.group(1) or "").strip()
            if title:
                out.append(title[:1].upper() + title[1:] + ":")
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def parse_markdown(source: str, fallback_title: str, code: str = "keep") -> ParsedDocument:
    """A Markdown file as its title and readable blocks; ``code``: keep (whole, as blocks) or drop."""
    if code not in ("keep", "drop"):
        raise ValueError(f"code must be keep or drop, got '{code}'")
    tokens = _parser().parse(_unwrap_block_fences(source))
    links: list[str] = []
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []  # (heading level, heading text)
    front: dict = {}
    first_heading = ""
    prefix = ""  # an admonition title waits to open its first paragraph
    rows: list[str] = []
    cells: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        section = SEPARATOR.join(h for _, h in path)
        if t.type == "front_matter":
            try:
                loaded = yaml.safe_load(t.content)
                front = loaded if isinstance(loaded, dict) else {}
            except yaml.YAMLError:
                front = {}
        elif t.type == "heading_open":
            level = int(t.tag[1:])
            text = _ANCHOR.sub("", _inline_text(tokens[i + 1], links)).strip()
            path = [(lv, h) for lv, h in path if lv < level] + [(level, text)]
            first_heading = first_heading or text
            i += 3
            continue
        elif t.type == "admonition_title_open":
            title = _inline_text(tokens[i + 1], links)
            prefix = f"{title}:" if title else ""
            i += 3
            continue
        elif t.type == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            cells.append(_inline_text(t, links))
        elif t.type == "tr_close":
            rows.append(" | ".join(c for c in cells if c))
            cells = []
        elif t.type == "table_close":
            if any(rows):
                blocks.append(Block("\n".join(r for r in rows if r), section))
            rows = []
        elif t.type == "inline":
            text = _inline_text(t, links)
            if prefix:
                text, prefix = f"{prefix} {text}".strip(), ""
            if text:
                blocks.append(Block(text, section))
        elif t.type in ("fence", "code_block"):
            if code == "keep" and t.content.strip():
                blocks.append(Block(t.content.rstrip("\n"), section, code=True))
        elif t.type == "html_block":
            text = _INCLUDE.sub("", html_text(t.content)).strip()
            if text:
                blocks.append(Block(text, section))
        i += 1
    title = str(front.get("title") or "").strip() if isinstance(front.get("title"), str | int | float) else ""
    return ParsedDocument(title or first_heading or fallback_title, blocks, links, front)
