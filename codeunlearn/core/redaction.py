"""Credentials out of what is shown: a URI's user:password and secret query values become `***`.

A tracking URI may carry credentials (`https://user:secret@host/`, `...?token=abc`). The real URI is
used to connect; `redact_uri` is what parameters, logs, printed lines and certificates carry.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "***"
# A query parameter is secret when one of its name's words is one of these, or its name ends with
# one of them (`apikey`, `X-Amz-Signature`), in any case.
SECRET_WORDS = frozenset(
    ("token", "key", "secret", "password", "passwd", "pwd", "auth", "signature", "sig", "credential")
)
SECRET_NAMES = frozenset(("access_token", "api_key"))


def is_secret_name(name: str) -> bool:
    """Whether a query parameter's name looks like it holds a credential."""
    lowered = unquote_plus(name).strip().lower()
    words = [word for word in re.split(r"[^a-z0-9]+", lowered) if word]
    return (
        lowered in SECRET_NAMES
        or any(word in SECRET_WORDS for word in words)
        or any(lowered.endswith(word) for word in SECRET_WORDS - {"sig", "pwd"})
    )


def redact_uri(uri: str) -> str:
    """`uri` with its user:password and the values of secret-looking query parameters replaced by `***`.

    A plain path, a `sqlite:` or a `file:` URI comes back unchanged, as does anything that holds no
    credentials; the rest of the URI keeps its exact spelling.
    """
    parts = urlsplit(uri)
    if not parts.scheme or parts.scheme.lower() in ("sqlite", "file"):
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_pair(pair: str) -> str:
    name, sep, value = pair.partition("=")
    return f"{name}={REDACTED}" if sep and value and is_secret_name(name) else pair
