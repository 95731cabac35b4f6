"""The job's mTLS Secrets after an interrupted creation: one CA in the end, whatever was left behind."""

from __future__ import annotations

import base64
from typing import Any

from conftest import Cluster, small_job, wait_for
from cryptography import x509

from fedkube.plan import make_plan
from fedkube.secure.tls import Authority, make_transport_material
from fedkube.spec import parse_manifest
from fedkube_operator.render import Owner, render_ca_secret, render_transport_secrets


def secret(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.get("secret", name)


def data(obj: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(obj["data"][key])


def test_identities_left_by_an_interrupted_creation_end_under_the_jobs_one_ca(cluster: Cluster) -> None:
    manifest = small_job("ids", partitions=3)
    cluster.apply(manifest)  # no operator yet: the objects below are what a pass cut off half-way left
    owner = Owner.of(cluster.job("ids"))
    plan = make_plan(parse_manifest(manifest))
    kept = Authority.new("ids")           # the CA Secret, and client-0, made before the interruption
    stale = make_transport_material("ids", 3)  # an earlier pass's other CA: aggregator and client-1
    left = [render_ca_secret(plan, owner, kept),
            *render_transport_secrets(plan, owner, {"client-0": kept.issue("ids", "client-0")}),
            *render_transport_secrets(plan, owner, {n: stale[n] for n in ("aggregator", "client-1")})]
    for obj in left:
        cluster.apply(obj)
    before = {n: secret(cluster, f"ids-tls-{n}")["metadata"]["uid"] for n in ("client-0", "client-1", "aggregator")}

    cluster.start_operator(webhook=False)
    wait_for(lambda: cluster.kubectl("get", "configmap", "ids-manifest", check=False).returncode == 0, 60,
             "the job's ConfigMap (created after every Secret)", diagnose=cluster.diagnose)

    ca = secret(cluster, "ids-tls-ca")
    assert data(ca, "tls.crt") == kept.cert and data(ca, "tls.key") == kept.key  # the first CA stays
    ca_cert = x509.load_pem_x509_certificate(kept.cert)
    for name in ("aggregator", "client-0", "client-1", "client-2"):
        obj = secret(cluster, f"ids-tls-{name}")
        assert data(obj, "ca.crt") == kept.cert, name
        x509.load_pem_x509_certificate(data(obj, "tls.crt")).verify_directly_issued_by(ca_cert)
    after = {n: secret(cluster, f"ids-tls-{n}")["metadata"]["uid"] for n in before}
    assert after["client-0"] == before["client-0"]  # signed by the job's CA: kept as it was
    assert after["client-1"] != before["client-1"] and after["aggregator"] != before["aggregator"]
    assert "ids-tls-client-1 does not chain to the job's CA" in cluster.operator_log()
    # No pod may mount the CA's key: only its own identity Secret.
    pods = wait_for(lambda: len(p := cluster.pods("ids")) == 4 and p, 30, "1 + 3 pods", diagnose=cluster.diagnose)
    mounted = {v["secret"]["secretName"] for p in pods for v in p["spec"]["volumes"] if "secret" in v}
    assert mounted == {f"ids-tls-{n}" for n in ("aggregator", "client-0", "client-1", "client-2")}
