"""Per-job mutual TLS material: a job CA, an aggregator certificate, one client certificate per partition.

Every job gets its own CA, so a certificate of one job is worthless in another. A client
certificate names its partition twice: in the subject (`CN=partition-3`, `O=<job>`) for people
reading logs, and in a URI SAN (`urn:fedkube:<job>:partition:3`) that the aggregator parses to
bind a connection to the one partition it may speak for. The local launcher signs with the CA's
private key and then drops it; the operator keeps it in a Secret of its own that no pod mounts,
so that a creation interrupted half-way can finish under the same CA (see `Authority`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedkube.secure import DEFAULT_TLS_DIR

__all__ = ["DEFAULT_TLS_DIR", "Authority", "Identity", "make_transport_material", "partition_of"]

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
AGGREGATOR = "aggregator"
VALIDITY = datetime.timedelta(days=30)
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")
_URI = re.compile(r"^urn:fedkube:(?P<job>[^:]+):partition:(?P<partition>\d+)$")


def client_identity(partition: int) -> str:
    return f"client-{partition}"


@dataclass(frozen=True)
class Identity:
    """One party's PEM material: the job CA's certificate, its own certificate and private key."""

    ca: bytes
    cert: bytes
    key: bytes

    def write(self, directory: Path) -> None:
        """ca.crt, tls.crt, tls.key in `directory`, readable by the owner only (0600)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, data in ((CA_FILE, self.ca), (CERT_FILE, self.cert), (KEY_FILE, self.key)):
            path = directory / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(path, 0o600)  # also when the file existed with wider permissions

    @classmethod
    def read(cls, directory: Path) -> Identity:
        try:
            return cls(*((directory / n).read_bytes() for n in (CA_FILE, CERT_FILE, KEY_FILE)))
        except OSError as exc:
            raise FileNotFoundError(
                f"TLS material missing in {directory} (needs {CA_FILE}, {CERT_FILE}, {KEY_FILE}; "
                f"spec.transport.tls: false turns mutual TLS off): {exc}") from exc


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))


def _name(job: str, common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, job),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Authority:
    """A job CA: its certificate and private key (PEM), which sign every identity of the job."""

    cert: bytes
    key: bytes

    @classmethod
    def new(cls, job: str) -> Authority:
        now = datetime.datetime.now(datetime.UTC)
        key = _key()
        name = _name(job, f"fedkube job CA {job}")
        cert = (_builder(name, name, key.public_key(), now)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(_pem(cert), _pem_key(key))

    def issue(self, job: str, identity: str, dns_names: Iterable[str] = ()) -> Identity:
        """The material of one identity: "aggregator" (a server certificate covering `dns_names`,
        localhost and the loopback addresses) or "client-<p>" (a client certificate naming partition p).
        """
        if identity == AGGREGATOR:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([*dns_names, *LOCAL_NAMES])]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOCAL_ADDRESSES]
            common_name, usage = AGGREGATOR, ExtendedKeyUsageOID.SERVER_AUTH
        else:
            partition = int(identity.removeprefix("client-"))
            names = [x509.UniformResourceIdentifier(f"urn:fedkube:{job}:partition:{partition}")]
            common_name, usage = f"partition-{partition}", ExtendedKeyUsageOID.CLIENT_AUTH
        ca_cert = x509.load_pem_x509_certificate(self.cert)
        ca_key = serialization.load_pem_private_key(self.key, password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key, now = _key(), datetime.datetime.now(datetime.UTC)
        cert = (_builder(_name(job, common_name), ca_cert.subject, key.public_key(), now)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return Identity(self.cert, _pem(cert), _pem_key(key))

    def issued(self, identity: Identity) -> bool:
        """Whether `identity` trusts this CA and carries a certificate this CA signed."""
        if identity.ca != self.cert:
            return False
        try:
            x509.load_pem_x509_certificate(identity.cert).verify_directly_issued_by(
                x509.load_pem_x509_certificate(self.cert))
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def identities(partitions: int) -> list[str]:
    return [AGGREGATOR, *(client_identity(p) for p in range(partitions))]


def make_transport_material(job: str, partitions: int, dns_names: Iterable[str] = ()) -> dict[str, Identity]:
    """Fresh material for one job, under a fresh CA: "aggregator" and "client-<p>" for every partition."""
    authority = Authority.new(job)
    return {identity: authority.issue(job, identity, dns_names) for identity in identities(partitions)}


def partition_of(cert_pem: bytes, job: str) -> int | None:
    """The partition a (CA-verified) client certificate speaks for, or None if it names none of this job."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        match = _URI.match(uri)
        if match and match["job"] == job:
            return int(match["partition"])
    return None
