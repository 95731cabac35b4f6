"""The admission webhook's HTTPS endpoint: Kopf's server, with two things a cluster install needs.

- A self-signed certificate made with `cryptography` instead of Kopf's optional
  `certbuilder`, when no certificate files are given (imported only then).
- A client config that names a Service, so the API server can reach the operator's pod;
  Kopf's managed ValidatingWebhookConfiguration then carries that Service and the CA bundle.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator, Collection
from typing import Any

import kopf

from fedkube_operator.config import WebhookConfig


def self_signed_certificate(hostnames: Collection[str], password: str | None = None) -> tuple[bytes, bytes]:
    """A PEM certificate and key for `hostnames` (DNS names or IPs), valid for ten years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hostnames if h and h not in ("0.0.0.0", "::")):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    common_name = next((n.value for n in names if isinstance(n, x509.DNSName)), "fedkube-operator")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(common_name))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class FedkubeWebhookServer(kopf.WebhookServer):
    """`kopf.WebhookServer` that signs its own certificate and can point the API server at a Service."""

    def __init__(self, config: WebhookConfig) -> None:
        sans: list[str] = []
        if config.service is not None:
            namespace, name = config.service
            sans = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}"]
        super().__init__(addr=config.addr, port=config.port, host=config.host, insecure=config.insecure,
                         certfile=config.cert_file, pkeyfile=config.key_file, extra_sans=sans)
        self._service = config.service
        self._service_port = config.service_port

    @staticmethod
    def build_certificate(hostnames: Collection[str], password: str | None = None) -> tuple[bytes, bytes]:
        return self_signed_certificate(hostnames, password)

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            if self._service is None:
                yield client_config
                continue
            namespace, name = self._service
            # No path: Kopf appends "/<handler id>", the route its server listens on.
            service_config: dict[str, Any] = {
                "service": {"namespace": namespace, "name": name, "port": self._service_port}}
            if "caBundle" in client_config:
                service_config["caBundle"] = client_config["caBundle"]
            yield service_config
