"""Named points for testing crashes and races: `CODEUNLEARN_FAILPOINTS=after-register` makes the
process kill itself (SIGKILL, no cleanup, exactly like a lost machine) when it reaches that point;
`name=wait:PATH` makes it wait there until PATH exists (another process may act meanwhile).

Off unless the variable names the point; production runs never set it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

WAIT_LIMIT_S = 600.0


def failpoint(name: str) -> None:
    """Die here by SIGKILL, or wait for a file, if CODEUNLEARN_FAILPOINTS (comma-separated) names
    this point."""
    for entry in os.environ.get("CODEUNLEARN_FAILPOINTS", "").split(","):
        point, _, action = entry.partition("=")
        if point != name:
            continue
        if action.startswith("wait:"):
            _wait_for(Path(action.removeprefix("wait:")))
        else:
            os.kill(os.getpid(), signal.SIGKILL)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
