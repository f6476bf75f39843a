"""Progress bars (rate and ETA) and logging set-up shared by every stage."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A tqdm bar on stderr; silent when IRFORGE_PROGRESS=0 (tests, logs captured to files)."""
    if os.environ.get("IRFORGE_PROGRESS", "1") == "0":
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, dynamic_ncols=True, mininterval=1.0, file=sys.stderr)


def setup_logging(level: str = "INFO") -> None:
    # Plain lines (no wrapping): they end up in dvc's output, CI logs and files as often as on a terminal.
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("httpx", "urllib3", "filelock", "jnius", "faiss.loader", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
