"""Structured logs: one JSON object per line, carrying the request id of the request being served; on a
terminal (or with `DIFFPLEX_LOG_FORMAT=human`) the same records as short human lines.

The id lives in a contextvar set by the request middleware, so every log line a request causes (routes,
stores, job runners started from it) carries it without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id := request_id_var.get():
            entry["request_id"] = request_id
        if tenant := tenant_var.get():
            entry["tenant"] = tenant
        entry |= {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class HumanFormatter(logging.Formatter):
    """`16:40:01 info  ready  backend=pytorch image_size=64`: the JSON record's fields, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if request_id := request_id_var.get():
            fields["request_id"] = request_id
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname.lower():<7} "
        line += record.getMessage() + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def human_output(log_format: str = "auto") -> bool:
    """Human lines when asked, or on "auto" when stderr is a terminal (a person watching); JSON otherwise (a log
    collector reading a pipe or file)."""
    if log_format == "auto":
        return sys.stderr.isatty()
    return log_format == "human"


def configure_logging(level: str = "INFO", log_format: str = "auto") -> None:
    """JSON lines (or human ones, `human_output`) on stderr for our loggers and uvicorn's (its access log is
    replaced by ours)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HumanFormatter() if human_output(log_format) else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
