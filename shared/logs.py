"""Log set-up shared by both services: context fields added once, text or JSON-lines output.

A service installs :func:`configure_logging` at start-up with its constant context (the
gateway's id); a log call that concerns one device passes ``extra={"device": ...}``. Neither
is written by hand into a message's format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

# Attributes every LogRecord has; anything else on a record was added as context.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "context"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s %(message)s"
# Fields bound for the current task and the tasks and threads it starts (e.g. one gateway's
# id while several run in one test process).
_bound: ContextVar[Mapping[str, str]] = ContextVar(
    "_bound", default=MappingProxyType({}))


def bind_context(**fields: str) -> None:
    """Add ``fields`` to every record logged from this context and the tasks it starts."""
    _bound.set({**_bound.get(), **fields})


class ContextFilter(logging.Filter):
    """Adds constant fields (e.g. ``gateway``) to every record and renders a ``context`` text."""

    def __init__(self, fields: Mapping[str, str], keys: Iterable[str] = ("device",)) -> None:
        super().__init__()
        self.fields = dict(fields)
        # Per-call fields (given with ``extra=``) shown in the text context when present.
        self.keys = tuple(keys)

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the constant fields and the ``context`` text; never drops a record."""
        fields = {**self.fields, **_bound.get()}
        for key, value in fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        names = (*fields, *(k for k in self.keys if k not in fields))
        parts = [f"{k}={getattr(record, k)}" for k in names if getattr(record, k, None)]
        record.context = (" [" + " ".join(parts) + "]") if parts else ""
        return True


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str, *, json_lines: bool = False,
                      fields: Mapping[str, str] | None = None,
                      filters: Iterable[logging.Filter] = (),
                      text_format: str = TEXT_FORMAT) -> logging.Handler:
    """Log to stderr with the context filter (and ``filters``) on the one root handler."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter(fields or {}))
    for extra_filter in filters:
        handler.addFilter(extra_filter)
    handler.setFormatter(JsonLinesFormatter() if json_lines else logging.Formatter(text_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return handler
