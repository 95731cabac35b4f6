"""The aggregator's status document and the small HTTP endpoint that serves it with /metrics.

Pods get no Kubernetes API token, so the aggregator publishes its progress here and the
operator (or the local launcher) polls it: one document, read the same way by both.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedkube.aggregator.history import History
from fedkube.status_document import STATUS_PATH

log = logging.getLogger(__name__)


@dataclass
class StatusBoard:
    """Everything the status document says, kept current by the aggregator's main loop."""

    job: str
    rounds: int
    phase: str = "Pending"
    round: int = 0
    message: str = ""
    history: History = field(default_factory=History)
    checkpoint: dict[str, Any] | None = None
    clients: Callable[[], dict[str, int]] = lambda: {}
    privacy: dict[str, Any] | None = None  # epsilon and the budget, for jobs with spec.privacy
    reason: str = ""                       # why the job ended early, e.g. PrivacyBudgetExhausted

    def document(self) -> dict[str, Any]:
        return {**self._summary(), "history": self.history}

    def _summary(self) -> dict[str, Any]:
        """The document but its history, from the history's kept totals: no work per round so far."""
        last = self.history[-1] if self.history else {}
        evaluated = self.history.evaluated()
        bytes_in, bytes_out = self.history.bytes_total()
        return {
            "job": self.job,
            "phase": self.phase,
            "round": self.round,
            "rounds": self.rounds,
            "message": self.message,
            **({"reason": self.reason} if self.reason else {}),
            "clients": self.clients(),
            "metrics": {"accuracy": evaluated.get("accuracy"), "loss": evaluated.get("loss"),
                        "bytes_in": bytes_in, "bytes_out": bytes_out,
                        "round_bytes_in": last.get("bytes_in"), "round_bytes_out": last.get("bytes_out"),
                        "compression_ratio": last.get("compression_ratio")},
            "checkpoint": self.checkpoint,
            **({"privacy": self.privacy} if self.privacy is not None else {}),
        }

    def document_parts(self, history: Sequence[bytes | memoryview] = ()) -> tuple[bytes | memoryview, ...]:
        """`json.dumps(self.document())` (ASCII) in pieces, the history's kept text among them uncopied
        (see History.parts); `history`: those parts as the caller just had them."""
        head = f'{json.dumps(self._summary())[:-1]}, "history": '.encode()
        return head, *(history or self.history.parts()), b"}"

    def document_bytes(self) -> bytes:
        """`json.dumps(self.document())`, encoded: what GET /status sends, without decoding the history."""
        return b"".join(self.document_parts())

    def document_json(self) -> str:
        """`json.dumps(self.document())`."""
        return self.document_bytes().decode()


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


def status_routes(document: Callable[[], bytes], metrics: Route) -> dict[str, Route]:
    """GET /status (JSON), /metrics (Prometheus text) and /healthz."""
    return {STATUS_PATH: lambda: (document(), "application/json"),
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
