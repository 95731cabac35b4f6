"""The aggregator's status document and the small HTTP endpoint that serves it with /metrics.

Pods get no Kubernetes API token, so the aggregator publishes its progress here and the
operator (or the local launcher) polls it: one document, read the same way by both.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedkube.status_document import STATUS_PATH

log = logging.getLogger(__name__)


class HistoryJson:
    """The history as JSON text, each round encoded once and its text kept while the round's entry stays
    as it was encoded.

    metrics.json, status.json and `GET /status` all carry the whole history, so encoding it afresh after
    every round made a long job's rounds grow slower with its length. An entry can still change after it
    is published (the round just finished gains its checkpoint time; a CKKS job fills in the accuracy
    of an earlier round), so each is compared with a copy of what was encoded, which costs a fraction
    of encoding it again. The text is what `json.dumps(history)` writes.
    """

    def __init__(self) -> None:
        self._encoded: list[tuple[dict[str, Any], str]] = []  # (a copy of the entry, its text)

    def __call__(self, history: list[dict[str, Any]]) -> str:
        del self._encoded[len(history):]
        for i, entry in enumerate(history):
            if i < len(self._encoded) and self._encoded[i][0] == entry:
                continue
            encoded = (copy.deepcopy(entry), json.dumps(entry))
            if i < len(self._encoded):
                self._encoded[i] = encoded
            else:
                self._encoded.append(encoded)
        return "[" + ", ".join(text for _, text in self._encoded) + "]"


@dataclass
class StatusBoard:
    """Everything the status document says, kept current by the aggregator's main loop."""

    job: str
    rounds: int
    phase: str = "Pending"
    round: int = 0
    message: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    clients: Callable[[], dict[str, int]] = lambda: {}
    privacy: dict[str, Any] | None = None  # epsilon and the budget, for jobs with spec.privacy
    reason: str = ""                       # why the job ended early, e.g. PrivacyBudgetExhausted
    history_json: HistoryJson = field(default_factory=HistoryJson, repr=False)

    def document(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        evaluated = next((h for h in reversed(self.history) if h.get("accuracy") is not None), {})
        return {
            "job": self.job,
            "phase": self.phase,
            "round": self.round,
            "rounds": self.rounds,
            "message": self.message,
            **({"reason": self.reason} if self.reason else {}),
            "clients": self.clients(),
            "metrics": {"accuracy": evaluated.get("accuracy"), "loss": evaluated.get("loss"),
                        "bytes_in": sum(h["bytes_in"] for h in self.history),
                        "bytes_out": sum(h["bytes_out"] for h in self.history),
                        "round_bytes_in": last.get("bytes_in"), "round_bytes_out": last.get("bytes_out"),
                        "compression_ratio": last.get("compression_ratio")},
            "checkpoint": self.checkpoint,
            **({"privacy": self.privacy} if self.privacy is not None else {}),
            "history": self.history,
        }

    def document_json(self, history: str | None = None) -> str:
        """`json.dumps(self.document())`, reusing the history's kept text (see HistoryJson), or `history`,
        that text as the caller just had it."""
        doc = self.document()
        del doc["history"]  # the last key: its text goes where json.dumps would put it
        return f'{json.dumps(doc)[:-1]}, "history": {history or self.history_json(self.history)}}}'


def termination_message(document: dict[str, Any], limit: int = 4096) -> str:
    """The status document as a pod's termination message: Kubernetes keeps only `limit` bytes,
    so the oldest rounds of the history are left out until it fits."""
    doc = dict(document)
    history = list(doc.get("history") or [])
    while True:
        doc["history"] = history
        text = json.dumps(doc, separators=(",", ":"))
        if len(text.encode()) <= limit or not history:
            return text
        history = history[max(1, len(history) // 4):]


Route = Callable[[], tuple[bytes, str]]


def status_routes(document_json: Callable[[], str], metrics: Route) -> dict[str, Route]:
    """GET /status (JSON), /metrics (Prometheus text) and /healthz."""
    return {STATUS_PATH: lambda: (document_json().encode(), "application/json"),
            "/metrics": metrics,
            "/healthz": lambda: (b"ok\n", "text/plain")}


async def serve_http(routes: Mapping[str, Route], host: str, port: int) -> asyncio.Server:
    """A plain HTTP/1.1 port answering GET for each route, 404 otherwise."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            path = request_line[1].split("?")[0] if len(request_line) >= 2 else ""
            route = routes.get(path)
            if route is not None:
                code, (body, ctype) = "200 OK", route()
            else:
                code, body, ctype = "404 Not Found", b"not found\n", "text/plain"
            writer.write(f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("status request failed: %s", exc)
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
