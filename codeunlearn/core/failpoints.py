"""Named crash points for testing recovery: `CODEUNLEARN_FAILPOINTS=after-register` makes the process
kill itself (SIGKILL, no cleanup, exactly like a lost machine) when it reaches that point.

Off unless the variable names the point; production runs never set it.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    """Die here by SIGKILL if CODEUNLEARN_FAILPOINTS (comma-separated) names this point."""
    if name in os.environ.get("CODEUNLEARN_FAILPOINTS", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
