"""Fault-injection points, for the tests that prove a CI step survives being killed at the worst moment.

`SLUICE_FAULT=<point>` makes the process kill itself with SIGKILL (nothing runs after: no finally
block, no atexit) when it reaches that point. Unset, every point is a no-op.

  after-aliases   the registry's aliases moved, the commit not made yet
  after-commit    the commit made, not pushed yet
"""

from __future__ import annotations

import os
import signal

POINTS = ("after-aliases", "after-commit")


def point(name: str) -> None:
    if os.environ.get("SLUICE_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
