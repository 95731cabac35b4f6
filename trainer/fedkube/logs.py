"""Structured logs for every fedkube command: `--log-format json|text`.

Every line carries the job, the round and the partition it is about, so the logs of a job's
many processes can be merged and filtered by round or by client. The job and the round are
process-wide facts (one job per process, one round at a time), kept in a small context that a
handler filter copies onto each record; a record that names its own `partition` or `round`
(`log.info(..., extra={"partition": p})`) keeps it. In JSON every line has all three keys,
null where one does not apply (an aggregator line about no particular client has no partition).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

CONTEXT_FIELDS = ("job", "round", "partition")
FORMATS = ("text", "json")
_context: dict[str, Any] = {}


def set_context(**fields: Any) -> None:
    """Set (or, with None, clear) job / round / partition for every following line of this process."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields {sorted(unknown)}; expected {CONTEXT_FIELDS}")
    _context.update(fields)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in CONTEXT_FIELDS:
            if getattr(record, key, None) is None:
                setattr(record, key, _context.get(key))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job, round, partition[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **{key: getattr(record, key, None) for key in CONTEXT_FIELDS},
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with `[job=.. round=.. partition=..]` naming whatever applies.

    A line without an exception is put together here in one step, its time to the second made once a
    second: logging's general path (style lookups, a local time and strftime for every line) cost a client
    more than the rest of its work on a small round, whose line it writes every round."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, time.strftime(self.default_time_format, self.converter(second)))
        return self.default_msec_format % (self._second[1], record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        fields = [f"{key}={value}" for key in CONTEXT_FIELDS if (value := getattr(record, key, None)) is not None]
        record.context = f" [{' '.join(fields)}]" if fields else ""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        return f"{self.formatTime(record)} {record.levelname} {record.name}{record.context}: {record.message}"


def setup_logging(level: str = "info", log_format: str = "text", stream: TextIO | None = None) -> None:
    """Route every logger of the process through one handler in the chosen format."""
    if log_format not in FORMATS:
        raise ValueError(f"--log-format must be one of {FORMATS}, not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # Neither format prints the caller's file and line, thread or process: finding them for every record
    # cost more than the rest of a small round's client line (the Logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
