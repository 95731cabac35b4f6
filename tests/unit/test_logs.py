"""Structured logs: both formats name job, round and partition; explicit fields win over the context."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from fedkube.cli import build_parser
from fedkube.logs import TextFormatter, set_context, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    set_context(job=None, round=None, partition=None)
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(log_format: str) -> list[str]:
    out = io.StringIO()
    setup_logging("info", log_format, out)
    log = logging.getLogger("fedkube.test")
    set_context(job="digits")
    log.info("before any round")
    set_context(round=3)
    log.info("round line")
    log.warning("about a client", extra={"partition": 5})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    return out.getvalue().splitlines()


def test_json_lines_carry_job_round_and_partition(restore_logging: None) -> None:
    lines = [json.loads(line) for line in emit("json") if line.startswith("{")]
    assert [(d["job"], d["round"], d["partition"]) for d in lines] == [
        ("digits", None, None), ("digits", 3, None), ("digits", 3, 5), ("digits", 3, None)]
    assert lines[2]["level"] == "warning" and lines[2]["message"] == "about a client"
    assert lines[2]["logger"] == "fedkube.test" and lines[2]["time"].endswith("+00:00")
    assert "RuntimeError: boom" in lines[3]["exception"]


def test_text_lines_name_what_applies(restore_logging: None) -> None:
    lines = emit("text")
    assert "[job=digits]: before any round" in lines[0]
    assert "[job=digits round=3]: round line" in lines[1]
    assert "[job=digits round=3 partition=5]: about a client" in lines[2]


def test_text_lines_are_what_loggings_own_formatter_writes_to_the_millisecond() -> None:
    ours, reference = TextFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failure = sys.exc_info()
    for created, exc_info in ((1700000000.9991, None), (1700000000.25, None), (1700000001.0004, failure),
                              (1700000001.5, None), (1699999999.75, None)):
        record = logging.LogRecord("fedkube.x", logging.WARNING, "", 0, "round %d: %s", (4, "late"), exc_info)
        record.created, record.msecs, record.round = created, (created - int(created)) * 1000, 4
        line = ours.format(record)
        record.exc_text = None  # the reference formats the exception afresh
        assert line == reference.format(record)
        assert line.endswith("[round=4]: round 4: late") == (exc_info is None)


def test_unknown_context_field_and_format_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log context fields"):
        set_context(jobs="x")
    with pytest.raises(ValueError, match="--log-format"):
        setup_logging("info", "xml")


@pytest.mark.parametrize("argv", [
    ["--log-format", "json", "validate", "x.yaml"],
    ["validate", "--log-format", "json", "x.yaml"],
    ["run", "x.yaml", "--log-format", "json"],
    ["aggregator", "--manifest", "m", "--log-format", "json"],
    ["client", "--manifest", "m", "--partition", "0", "--aggregator", "a:1", "--log-format", "json"],
    ["report", "runs/x", "--log-format", "json"],
    ["checkpoints", "ls", "file:///c", "--log-format", "json"],
])
def test_every_command_takes_log_format(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).log_format == "json"
    assert build_parser().parse_args([a for a in argv if a not in ("--log-format", "json")]).log_format == "text"
