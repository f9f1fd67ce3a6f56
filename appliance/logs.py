"""Logging: one line per event on stderr, as text or JSON (`--log-format json`).

Events carry fields: `log.info("listening", url=...)`. Text lines read
`2026-11-25T12:00:00.123Z INFO api: listening url=http://127.0.0.1:8080`.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ROOT = "appliance"
# Which worker process logs (appliance/workers/): every line of a worker says it; None in a lone box.
_worker: int | None = None


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _short_name(record: logging.LogRecord) -> str:
    name = record.name.removeprefix(ROOT + ".")
    return name if _worker is None else f"w{_worker}/{name}"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        line = f"{_timestamp(record.created)} {record.levelname} {_short_name(record)}: {record.getMessage()}"
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += " exception=" + json.dumps(self.formatException(record.exc_info))
        return line


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in "\"=" for c in text)) else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": _short_name(record),
            "msg": record.getMessage(),
        }
        for key, value in getattr(record, "fields", {}).items():
            event.setdefault(key, value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


class EventLogger:
    """A logger whose calls take the event's fields as keyword arguments."""

    def __init__(self, name: str):
        self._log = logging.getLogger(f"{ROOT}.{name}")

    def _emit(self, level: int, msg: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, msg, extra={"fields": fields}, exc_info=exc_info)

    def debug(self, msg: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._emit(logging.INFO, msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._emit(logging.WARNING, msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._emit(logging.ERROR, msg, fields)

    def exception(self, msg: str, **fields: Any) -> None:
        self._emit(logging.ERROR, msg, fields, exc_info=True)


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def configure(fmt: str = "text", level: str = "info", worker: int | None = None) -> None:
    global _worker
    _worker = worker
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries log through the same handler; their chatter stays below our level.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
