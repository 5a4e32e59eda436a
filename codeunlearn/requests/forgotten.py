"""The topics an active mask already forgets, rebuilt from its sources' names (pipeline topics by key,
requests from the request store), so a new topic's retain sets leave their rows out
(codeunlearn.data.forgotten)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from codeunlearn.core.config import TopicConfig
from codeunlearn.data.forgotten import source_topics
from codeunlearn.requests.queue import RequestStore, topic_hash

log = logging.getLogger(__name__)


def forgotten_topics(
    requests: RequestStore, names: Iterable[str], caps: TopicConfig, own: str
) -> tuple[TopicConfig, ...]:
    """The topics of the mask sources `names`, `own` (the topic or request being answered) left out."""

    known = {request.request_id: request for request in requests.list()}  # one query, not one per source

    def request_topic(request_id: str) -> TopicConfig | None:
        request = known.get(request_id)
        if request is None:
            log.warning("mask source %s is no request of %s", request_id, requests.store.root)
            return None
        topic = request.topic(caps)
        if topic.kind == "examples_file":
            # its rows are what the file held when the request was answered: a file gone or edited
            # since then no longer says which rows were forgotten
            if not Path(str(topic.examples_file)).expanduser().is_file():
                log.warning("request %s: its examples file is gone", request_id)
                return None
            if topic_hash(topic) != request.topic_hash:
                log.warning("request %s: its examples file was edited since it was answered", request_id)
                return None
        return topic

    return source_topics(names, caps, own, request_topic)
