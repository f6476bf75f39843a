"""The HTML report: building blocks (:mod:`.html`), figures (:mod:`.figures`) and the sections that combine
them (:mod:`.sections`); the report stage decides which sections its artifacts allow."""

from irforge.reporting import figures, html, sections

__all__ = ["figures", "html", "sections"]
