"""Progress of long loops: a tqdm bar on stderr in a terminal; when output goes to a file, a log line
at least every minute with the count done, the rate and the time left.

CODEUNLEARN_PROGRESS picks the form: `bar`/`1` (a bar), `log` (log lines), `0`/`off` (nothing).
By default a terminal gets the bar and anything else the log lines. Under torchrun only rank 0 reports.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

log = logging.getLogger("codeunlearn.progress")

LOG_INTERVAL_S = 60.0  # a log line at least this often while a loop runs (and at its start and end)
_MODES = {"1": "bar", "bar": "bar", "log": "log", "0": "off", "off": "off"}


class _LogLines(io.TextIOBase):
    """A stream tqdm writes its bar to; each refresh becomes one log record."""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            log.info(line)
        return len(text)


def progress_mode() -> str:
    """`bar`, `log` or `off`: CODEUNLEARN_PROGRESS if set, else `bar` in a terminal and `log` otherwise."""
    if os.environ.get("RANK", "0") != "0":
        return "off"
    forced = os.environ.get("CODEUNLEARN_PROGRESS", "").strip().lower()
    if forced:
        return _MODES.get(forced, "log")
    return "bar" if sys.stderr.isatty() else "log"


class _TimedLines(tqdm):
    """tqdm writing one log line per refresh; a new postfix waits for the next timed line."""

    def set_postfix(self, ordered_dict=None, refresh=True, **values):
        super().set_postfix(ordered_dict, refresh=False, **values)


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """A tqdm progress reporter over `iterable` (or with `total=`), in the form `progress_mode` picks."""
    mode = progress_mode()
    if mode == "bar":
        return tqdm(iterable, file=sys.stderr, mininterval=2.0, **kwargs)
    if mode == "log":
        return _TimedLines(
            iterable, file=_LogLines(), mininterval=LOG_INTERVAL_S, ascii=True, ncols=100, **kwargs
        )
    return tqdm(iterable, disable=True, **kwargs)
