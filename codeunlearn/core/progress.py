"""One tqdm bar on stderr for long loops: on in a terminal, off otherwise (or forced by env)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """A tqdm bar; CODEUNLEARN_PROGRESS=1 forces it on, =0 off; default: on when stderr is a terminal."""
    from tqdm.auto import tqdm

    forced = os.environ.get("CODEUNLEARN_PROGRESS")
    enabled = forced == "1" if forced in ("0", "1") else sys.stderr.isatty()
    enabled = enabled and os.environ.get("RANK", "0") == "0"  # under torchrun, one bar: rank 0's
    return tqdm(iterable, disable=not enabled, file=sys.stderr, mininterval=2.0, **kwargs)
