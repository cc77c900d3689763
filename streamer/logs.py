"""Process logging: human-readable lines, or one JSON object per line for log pipelines.

With ``runtime.log_format: json`` every record is a JSON object with ``ts``
(ISO 8601, UTC), ``level``, ``logger``, ``message`` and, for the few records
that other programs act on, ``event``: a name from
:data:`streamer.vocabulary.LogEvent` that stays fixed whatever the message
says (the chaos verdict counts them; Loki or Elasticsearch can alert on
them). Log such a record with ``extra=event("replay_pending")``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from streamer.vocabulary import LogEvent

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def event(name: LogEvent) -> dict[str, str]:
    """The ``extra`` of a log record that carries event ``name``."""
    return {"event": name}


class JsonFormatter(logging.Formatter):
    """One JSON object per record.

    >>> record = logging.LogRecord("streamer.x", logging.WARNING, "", 0, "failed (%s)", ("boom",), None)
    >>> record.event = "commit_failed"
    >>> line = json.loads(JsonFormatter().format(record))
    >>> line["level"], line["logger"], line["message"], line["event"]
    ('WARNING', 'streamer.x', 'failed (boom)', 'commit_failed')
    """

    def format(self, record: logging.LogRecord) -> str:
        """``record`` as a JSON line."""
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        name = getattr(record, "event", None)
        if name is not None:
            document["event"] = name
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def configure_logging(level: str, log_format: Literal["text", "json"]) -> None:
    """Send the process's log records to stderr at ``level``, as text lines or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
