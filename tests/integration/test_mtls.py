"""Mutual TLS between real processes: every refused identity is refused, logged and counted; the job goes on."""

from __future__ import annotations

import re
import stat

import grpc
import pytest
from jobs import Job, job_doc

from fedkube.client.main import open_channel
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.secure.tls import Identity, make_transport_material


@pytest.fixture
def job(tmp_path):
    job = Job(job_doc("mtls", partitions=3, rounds=2, min_available=2, joinTimeoutSeconds=300), tmp_path / "mtls")
    yield job
    job.stop()


def _join(channel: grpc.Channel, partition: int) -> grpc.StatusCode:
    try:
        pb_grpc.AggregatorStub(channel).Join(pb.JoinRequest(partition=partition), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    finally:
        channel.close()
    return grpc.StatusCode.OK


def test_strangers_and_impostors_are_refused_logged_counted_and_the_job_goes_on(job: Job) -> None:
    job.start(clients=[0, 1])
    job.wait_for("two clients to join", lambda s: s["clients"]["joined"] == 2)
    ca = Identity.read(job.run.tls_dir("aggregator")).ca
    stranger = make_transport_material("mtls", 3)["client-2"]  # right job name, another CA

    assert _join(grpc.secure_channel(job.target, grpc.ssl_channel_credentials(ca)), 2) == grpc.StatusCode.UNAVAILABLE
    assert _join(open_channel(job.target, stranger), 2) == grpc.StatusCode.UNAVAILABLE
    assert _join(grpc.insecure_channel(job.target), 2) == grpc.StatusCode.UNAVAILABLE
    assert _join(job.channel(0), 2) == grpc.StatusCode.PERMISSION_DENIED  # partition 0's certificate
    job.run.start_client(job.manifest, 2, job.ports["port"])  # the real partition 2 is welcome

    job.wait_for("the refusals to be counted",
                 lambda s: s["clients"].get("refused_tls_handshake") == 3 and s["clients"]["refused_impostor"] == 1)
    assert job.wait_exit(timeout=420) == 0, job.aggregator_log()
    history = job.metrics()
    assert [h["status"] for h in history] == ["completed"] * 2
    assert all(set(h["participants"]["reported"]) >= {0, 1} for h in history)
    assert job.final_status()["clients"]["refused_impostor"] == 1
    log = (job.run.run_dir / "logs" / "aggregator.log").read_text()
    assert "the certificate of partition 0 claimed partition 2" in log
    refusals = re.findall(r"(\d+) connection\(s\) refused at the TLS handshake", log)
    assert sum(map(int, refusals)) == 3, log


def test_local_material_is_owner_only(job: Job) -> None:
    for identity in ("aggregator", "client-0", "client-1", "client-2"):
        directory = job.run.tls_dir(identity)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {
            "ca.crt": 0o600, "tls.crt": 0o600, "tls.key": 0o600}


def test_tls_false_is_an_explicit_opt_out_with_a_loud_warning(tmp_path) -> None:
    doc = job_doc("plain", partitions=2, rounds=1, min_available=2, joinTimeoutSeconds=300)
    doc["spec"]["transport"] = {"tls": False}
    job = Job(doc, tmp_path / "plain").start()
    try:
        assert job.wait_exit(timeout=420) == 0, job.aggregator_log()
        assert "MUTUAL TLS IS OFF" in job.aggregator_log()
        assert not (job.run.run_dir / "tls").exists()
    finally:
        job.stop()
