"""HTML building blocks of the report: escaped tables, figure tags, notes, the page. No script, no remote
asset: the page reads offline."""

from __future__ import annotations

import html
from typing import Any

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.best td { font-weight: bold; }
.note { color: #777; font-style: italic; }
.kept { color: #1a7f37; } .rejected { color: #b42318; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f'<td class="text">{esc(v)}</td>' if isinstance(v, str) and j else f"<td>{esc(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(name: str) -> str:
    return f'<img src="{esc(name)}" alt="{esc(name)}">'


def missing(title: str, what: str) -> str:
    return note(title, f"Skipped: {what} does not exist yet.")


def note(title: str, text: str) -> str:
    """A section replaced by one line saying why (escaped here)."""
    return f'<h2>{esc(title)}</h2><p class="note">{esc(text)}</p>'


def page(title: str, intro: str, sections: list[str]) -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>{intro}</p>"
            + "\n".join(s for s in sections if s) + "</body></html>\n")
