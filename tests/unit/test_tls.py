"""Per-job mTLS material: who each certificate names, what it covers, how it is stored."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509

from fedkube.secure.tls import Identity, make_transport_material, partition_of


@pytest.fixture(scope="module")
def material() -> dict[str, Identity]:
    return make_transport_material("digits", 3, dns_names=["digits-aggregator", "digits-aggregator.team-a.svc"])


def test_one_identity_per_party_all_under_one_job_ca(material: dict[str, Identity]) -> None:
    assert sorted(material) == ["aggregator", "client-0", "client-1", "client-2"]
    ca = x509.load_pem_x509_certificate(material["aggregator"].ca)
    for identity in material.values():
        assert identity.ca == material["aggregator"].ca
        cert = x509.load_pem_x509_certificate(identity.cert)
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_aggregator_certificate_covers_service_names_and_loopback(material: dict[str, Identity]) -> None:
    cert = x509.load_pem_x509_certificate(material["aggregator"].cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["digits-aggregator", "digits-aggregator.team-a.svc",
                                                     "localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("::1")}


@pytest.mark.parametrize("partition", [0, 1, 2])
def test_client_certificate_names_its_partition(material: dict[str, Identity], partition: int) -> None:
    cert_pem = material[f"client-{partition}"].cert
    assert partition_of(cert_pem, "digits") == partition
    assert partition_of(cert_pem, "another-job") is None
    subject = x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()
    assert f"CN=partition-{partition}" in subject


def test_aggregator_certificate_names_no_partition(material: dict[str, Identity]) -> None:
    assert partition_of(material["aggregator"].cert, "digits") is None


def test_every_job_gets_a_fresh_ca() -> None:
    assert make_transport_material("digits", 1)["aggregator"].ca != make_transport_material("digits", 1)[
        "aggregator"].ca


def test_written_material_is_owner_only_and_reads_back(tmp_path, material: dict[str, Identity]) -> None:
    target = tmp_path / "tls" / "client-1"
    material["client-1"].write(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    assert Identity.read(target) == material["client-1"]


def test_missing_material_says_where_and_how_to_opt_out(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="spec.transport.tls: false"):
        Identity.read(tmp_path)
