"""Who is calling: each mTLS connection is bound to the partition its client certificate names.

gRPC verifies the chain against the job's CA during the handshake and refuses a client without
a certificate or with one from another CA before any call reaches us. Those refusals are
counted here all the same: gRPC asks for the server certificate at the start of every
handshake, so handshakes begun minus connections that went on to make an authenticated call
are the connections refused at the handshake. A verified client that claims a partition other
than its own is refused per call, logged with both partitions, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque

import grpc

from fedkube.secure.tls import Identity, partition_of

log = logging.getLogger(__name__)

# A handshake this recent may still be about to make its first call.
HANDSHAKE_GRACE_SECONDS = 2.0
INSECURE_WARNING = (
    "MUTUAL TLS IS OFF (spec.transport.tls: false): updates and weights travel in clear text and "
    "any process that reaches this port can speak for any partition. Use this only for debugging.")


class PeerGuard:
    """Binds calls to certificate identities and counts what it refuses."""

    def __init__(self, job: str, tls: bool) -> None:
        self.job, self.tls = job, tls
        self.refused: Counter[str] = Counter()
        self._recent_handshakes: deque[float] = deque()
        self._settled_handshakes = 0
        self._connections: set[str] = set()        # peer addresses that made a call after the handshake
        self._partitions: dict[str, int] = {}      # peer address -> partition of its certificate
        self._logged_handshake_refusals = 0

    def server_credentials(self, identity: Identity) -> grpc.ServerCredentials:
        config = grpc.ssl_server_certificate_configuration([(identity.key, identity.cert)],
                                                           root_certificates=identity.ca)

        def on_handshake() -> None:  # called by gRPC before each TLS handshake; None keeps the config
            self._recent_handshakes.append(time.monotonic())

        return grpc.dynamic_ssl_server_credentials(config, on_handshake, require_client_authentication=True)

    def refusal(self, context: grpc.aio.ServicerContext, partition: int) -> str | None:
        """Why this call may not speak for `partition`, or None when it may (always None without TLS)."""
        if not self.tls:
            return None
        peer = context.peer()
        self._connections.add(peer)
        own = self._partitions.get(peer)
        if own is None:
            pem = (context.auth_context().get("x509_pem_cert") or [b""])[0]
            own = partition_of(pem, self.job) if pem else None
            if own is None:
                self.refused["no_partition"] += 1
                log.warning("refused %s: its certificate names no partition of job %s", peer, self.job)
                return f"the client certificate names no partition of job {self.job}"
            self._partitions[peer] = own
        if own != partition:
            self.refused["impostor"] += 1
            log.warning("refused %s: the certificate of partition %d claimed partition %d", peer, own, partition,
                        extra={"partition": own})
            return f"this connection's certificate is partition {own}'s; it may not speak for partition {partition}"
        return None

    def handshake_refusals(self) -> int:
        """Connections refused during the TLS handshake (no certificate, or one from another CA)."""
        settled = time.monotonic() - HANDSHAKE_GRACE_SECONDS
        while self._recent_handshakes and self._recent_handshakes[0] < settled:
            self._recent_handshakes.popleft()
            self._settled_handshakes += 1
        refused = max(0, self._settled_handshakes - len(self._connections))
        if refused > self._logged_handshake_refusals:
            log.warning("%d connection(s) refused at the TLS handshake: no client certificate, or one not "
                        "issued by job %s's CA", refused - self._logged_handshake_refusals, self.job)
            self._logged_handshake_refusals = refused
        return refused

    def unsettled_seconds(self) -> float:
        """How long until the newest handshake is settled: at the end, refusals just made still count."""
        if not self._recent_handshakes:
            return 0.0
        return max(0.0, self._recent_handshakes[-1] + HANDSHAKE_GRACE_SECONDS - time.monotonic())

    async def watch(self, period: float = 1.0) -> None:
        """Log handshake refusals as they happen, not only when someone reads the status."""
        while self.tls:
            self.handshake_refusals()
            await asyncio.sleep(period)

    def counts(self) -> dict[str, int]:
        """For the status document: refusals by reason."""
        counts = dict(self.refused)
        if self.tls:
            counts["tls_handshake"] = self.handshake_refusals()
        return {f"refused_{k}": v for k, v in sorted(counts.items())}
