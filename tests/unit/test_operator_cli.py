"""The operator's command line and its webhook certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from fedkube_operator.config import DEFAULT_IMAGE
from fedkube_operator.handlers import VALIDATING_WEBHOOK_ID, assemble
from fedkube_operator.main import _parser, config_from_args
from fedkube_operator.webhook import self_signed_certificate


def config(*argv: str):  # type: ignore[no-untyped-def]
    return config_from_args(_parser().parse_args(list(argv)))


def test_defaults() -> None:
    c = config("--namespace", "ml")
    assert c.render.image == DEFAULT_IMAGE and DEFAULT_IMAGE.startswith("ghcr.io/fedkube/trainer:")
    assert c.poll_interval_seconds == 2.0
    assert c.timing.backoff_base_seconds == 10.0
    assert c.webhook is None


def test_a_scope_is_required_and_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args([])
    with pytest.raises(SystemExit):
        _parser().parse_args(["--namespace", "a", "--all-namespaces"])
    assert _parser().parse_args(["-n", "a", "-n", "b"]).namespace == ["a", "b"]


def test_webhook_options() -> None:
    c = config("-A", "--webhook-port", "9443", "--webhook-service", "fedkube-system/fedkube-operator",
               "--webhook-config", "fedkube.io")
    assert c.webhook is not None
    assert c.webhook.service == ("fedkube-system", "fedkube-operator")
    assert c.webhook.managed == "fedkube.io"
    with pytest.raises(SystemExit):
        config("-A", "--webhook-port", "9443", "--webhook-service", "no-slash")


def test_the_validating_handler_exists_only_with_a_webhook_server() -> None:
    without = assemble(config("-A"))
    with_hook = assemble(config("-A", "--webhook-port", "9443"))
    assert without.settings.admission.server is None
    assert [h.id for h in without.registry._webhooks.get_all_handlers()] == []
    assert [h.id for h in with_hook.registry._webhooks.get_all_handlers()] == [VALIDATING_WEBHOOK_ID]
    assert with_hook.settings.persistence.finalizer == "fedkube.io/operator"


def test_self_signed_certificate_names_service_and_ip(tmp_path: Path) -> None:
    cert_pem, key_pem = self_signed_certificate(["op.ns.svc", "127.0.0.1", "0.0.0.0"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["op.ns.svc"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
