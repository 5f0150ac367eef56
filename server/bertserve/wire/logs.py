"""Log set-up (plain or JSON lines) and the one-line-per-request log record (with its trace id when tracing is on)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from bertserve.config import LoggingConfig

REQUEST_LOGGER = "bertserve.requests"

# Attributes every LogRecord has; anything else was passed in `extra` and is data.
_STANDARD_ATTRIBUTES = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(config: LoggingConfig, stream: Any = None) -> None:
    """Send every log record to `stream` (stderr) in the configured format and level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(config.level.upper())


def log_request(
    *,
    request_id: str,
    method: str,
    heads: str,
    code: str,
    duration_ms: float,
    peer: str,
    principal: str | None,
    trace_id: str = "",
) -> None:
    """Log one finished request: DEBUG when it succeeded, WARNING for client errors, ERROR for server errors.

    The fields are also attached to the record, so the JSON format carries
    them as keys; ``trace_id`` (32 hex digits) only when the call was traced.
    Tokens and request payloads are never logged.
    """
    level = logging.DEBUG if code == "OK" else logging.ERROR if code in _SERVER_ERRORS else logging.WARNING
    logger = logging.getLogger(REQUEST_LOGGER)
    if not logger.isEnabledFor(level):
        return
    fields = {
        "request_id": request_id,
        "method": method,
        "head": heads,
        "code": code,
        "duration_ms": round(duration_ms, 3),
        "peer": peer,
        "principal": principal or "",
    }
    if trace_id:
        fields["trace_id"] = trace_id
    message = " ".join(f"{key}={value}" for key, value in fields.items() if value != "")
    logger.log(level, message, extra=fields)


_SERVER_ERRORS = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNIMPLEMENTED"}
