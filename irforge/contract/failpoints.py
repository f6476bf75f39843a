"""Failpoints for the reliability drills: ``IRFORGE_FAILPOINT=name[,name...]`` in the environment kills the
process with SIGKILL when it reaches a named point, so a test kills a stage at an exact instant (between two
outputs of one stage, between the two renames of a folder publish) instead of guessing it with a timer.
Unset, each point is one dictionary lookup.

Points: ``after-output:<artifact path>`` (a stage output was just written), ``publish-between-renames``,
and ``no-exchange`` (not a kill: publish as on a system without an atomic folder swap).
"""

from __future__ import annotations

import os
import signal


def active(name: str) -> bool:
    return name in os.environ.get("IRFORGE_FAILPOINT", "").split(",")


def failpoint(name: str) -> None:
    """Die here, as kill -9 would, when the drill names this point."""
    if active(name):
        os.kill(os.getpid(), signal.SIGKILL)
