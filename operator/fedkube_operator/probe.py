"""Reads the aggregator's status endpoint: the operator's only view of training progress.

Pods get no API token, so the aggregator cannot write status itself; it serves `GET /status`
and the operator polls it at the pod's IP. A probe that fails is not an error: the job keeps
its last known status until the next pass.
"""

from __future__ import annotations

import logging

import aiohttp

from fedkube.plan import STATUS_PORT
from fedkube.status_document import STATUS_PATH, AggregatorReport

logger = logging.getLogger(__name__)


class AggregatorProbe:
    """One HTTP session shared by every job's status polls."""

    def __init__(self, timeout_seconds: float = 3.0, port: int = STATUS_PORT) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._port = port
        self._session: aiohttp.ClientSession | None = None

    async def report(self, pod_ip: str) -> AggregatorReport | None:
        """The aggregator's report, or None if it cannot be read right now."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        try:
            async with self._session.get(f"http://{host}:{self._port}{STATUS_PATH}") as response:
                if response.status != 200:
                    return None
                return AggregatorReport.parse(await response.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.debug("aggregator status at %s unreadable: %s", pod_ip, exc)
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
