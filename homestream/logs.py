"""Logging set-up shared by every entrypoint: plain text (the default) or JSON lines.

``HOMESTREAM_LOG_FORMAT=json`` makes each log record one JSON object per line, with
``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the exception when there is
one, and the pipeline's context fields when the call passes them with ``extra=``::

    log.warning("dead-lettered", extra={"event_id": "e1", "partition": 3, "offset": 42})

>>> import logging
>>> record = logging.LogRecord("homestream.x", logging.INFO, __file__, 1, "sent %d", (3,),
...                            None)
>>> record.created = 0.0
>>> print(JsonFormatter().format(record))  # doctest: +NORMALIZE_WHITESPACE
{"time": "1970-01-01T00:00:00.000Z", "level": "INFO", "logger": "homestream.x",
 "message": "sent 3"}
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO, Any

#: Fields copied from ``extra=`` into the JSON line when a record has them.
CONTEXT_FIELDS: tuple[str, ...] = ("event_id", "profile_id", "request_id", "topic",
                                   "partition", "offset")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["error"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (so a replaced
    stderr, as under a test runner, never leaves the handler writing to a closed stream)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass  # the handler always writes to the current sys.stderr; assignments are ignored


def setup_logging(log_format: str = "text", level: int = logging.INFO,
                  stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (default stderr) as ``text`` or ``json``
    lines at ``level``. Calling it again replaces the handler it installed before (other
    handlers, such as a test runner's, are left alone). Returns the handler."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {log_format!r}")
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


_MARK = "_homestream_handler"
