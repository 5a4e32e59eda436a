"""Prefect flows over the codeunlearn library. The library's own INFO lines (progress of each stage,
never forget-set text) join the flow-run logs in the Prefect UI."""

import logging
import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "codeunlearn")
logging.getLogger("codeunlearn").setLevel(logging.INFO)
