"""Structured logging: one line per event, tagged with the subsystem that wrote it.

JSON by default (journald + jq friendly), ``LOG_FORMAT=text`` for humans. Operators grep by
subsystem (``journalctl -u arctic | grep netmgr``), so every logger is obtained via ``get_logger``.
"""

from __future__ import annotations

import json
import logging
import sys
import time

SUBSYSTEMS = ("api", "store", "cluster", "netmgr", "fwmgr", "qosmgr", "tproxymgr", "iptunmgr")
_ROOT = "arctic"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "subsystem": record.name.split(".", 1)[-1],
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} " \
               f"{record.name.split('.', 1)[-1]:<9} {record.getMessage()}{' ' + extra if extra else ''}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class SubsystemLogger(logging.LoggerAdapter):
    """``log.info("applied", rules=12)``: keyword arguments become structured fields."""

    def process(self, msg, kwargs):
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("exc_info", "stack_info", "extra")}
        kwargs["extra"] = {"fields": fields}
        return msg, kwargs


def get_logger(subsystem: str) -> SubsystemLogger:
    if subsystem not in SUBSYSTEMS:
        raise ValueError(f"unknown log subsystem {subsystem!r}")
    return SubsystemLogger(logging.getLogger(f"{_ROOT}.{subsystem}"), {})


def configure(fmt: str = "json", level: str = "info", stream=None) -> None:
    """Install the single stdout handler (idempotent)."""
    root = logging.getLogger(_ROOT)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
