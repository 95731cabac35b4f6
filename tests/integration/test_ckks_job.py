"""A CKKS job end to end with real processes: the aggregator sums ciphertexts it cannot read.

Both jobs below start from the same seeded model and data, so the CKKS job must land where
plain FedAvg lands, up to the scheme's rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from jobs import Job, job_doc
from safetensors.numpy import load_file

from fedkube.checkpoint import read_checkpoint
from fedkube.cli import main
from fedkube.he.codec import decrypt_mean
from fedkube.he.keys import make_context, public_bytes, public_context, read_context
from fedkube.he.params import ckks_params
from fedkube.he.session import decrypted_final_model, evaluate_model
from fedkube.he.wire import LAYOUT, PREFIX, TOTAL_WEIGHT
from fedkube.stores import open_store


def run(doc, tmp_path) -> Job:
    job = Job(doc, tmp_path / doc["metadata"]["name"]).start()
    assert job.wait_exit(timeout=400) == 0, job.aggregator_log()
    job.stop()
    return job


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckks")
    plain = job_doc("plain", partitions=3, rounds=3, min_available=3, localEpochs=1)
    ckks = job_doc("ckks", partitions=3, rounds=3, min_available=3, localEpochs=1)
    ckks["spec"]["secureAggregation"] = {"mode": "ckks"}
    return run(plain, tmp), run(ckks, tmp)


def test_ckks_job_matches_plain_fedavg(jobs):
    plain, ckks = jobs
    plain_store = open_store(f"file://{plain.run.run_dir}/checkpoints")
    ckks_store = open_store(f"file://{ckks.run.run_dir}/checkpoints")
    expected = load_file(str(plain.run.run_dir / "checkpoints/final/weights.safetensors"))
    decrypted = decrypted_final_model(ckks_store, ckks.run.ckks_secret)
    assert plain_store.exists("final/weights.safetensors")
    for name, value in expected.items():
        relative = np.linalg.norm(decrypted[name] - value) / np.linalg.norm(value)
        assert relative <= 1e-3, name
    plain_acc = evaluate_model(plain.job.spec.task, expected)["accuracy"]
    ckks_acc = evaluate_model(ckks.job.spec.task, decrypted)["accuracy"]
    assert abs(plain_acc - ckks_acc) <= 0.005 and ckks_acc > 0.7
    # The status shows the clients' evaluation of each model they decrypted.
    history = ckks.metrics()
    assert all(h["status"] == "completed" for h in history)
    assert [h["accuracy"] is not None for h in history] == [True, True, False]


def test_the_aggregator_holds_no_secret_key_and_its_checkpoints_no_plaintext(jobs):
    _, ckks = jobs
    secret = ckks.run.ckks_secret
    clients = ckks.run.children[1:]
    assert all(str(secret) in c.process.args for c in clients)
    aggregator_args = ckks.run.children[0].process.args
    assert "--ckks-context" not in aggregator_args and str(secret) not in aggregator_args  # it gets no key
    assert read_context(secret).is_private()
    context = public_context(ckks_params(ckks.job.spec.secure_aggregation.ckks))
    checkpoint = read_checkpoint(open_store(f"file://{ckks.run.run_dir}/checkpoints"), 3)
    assert set(checkpoint.weights) == {TOTAL_WEIGHT, LAYOUT} | {n for n in checkpoint.weights if n.startswith(PREFIX)}
    assert all(a.dtype == np.uint8 for n, a in checkpoint.weights.items() if n.startswith(PREFIX))
    # No float32 run of the model it encrypts appears anywhere in the checkpoint's files.
    model = decrypted_final_model(open_store(f"file://{ckks.run.run_dir}/checkpoints"), secret)
    raw = b"".join(p.read_bytes() for p in (ckks.run.run_dir / "checkpoints").rglob("*") if p.is_file())
    for value in model.values():
        assert value.astype(np.float32).tobytes()[:16] not in raw
    with pytest.raises(PermissionError):
        decrypt_mean(context, checkpoint.weights)


def test_checkpoint_export_decrypts_only_with_the_secret_key(jobs, tmp_path, capsys):
    _, ckks = jobs
    uri = f"file://{ckks.run.run_dir}/checkpoints"
    expected = decrypted_final_model(open_store(uri), ckks.run.ckks_secret)
    target = tmp_path / "model.safetensors"
    assert main(["checkpoints", "export", f"{uri}/final", "--to", str(target),
                 "--ckks-context", str(ckks.run.ckks_secret)]) == 0
    exported = load_file(str(target))
    assert sorted(exported) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(exported[name], value)
    public = tmp_path / "public.ctx"
    public.write_bytes(public_bytes(make_context(ckks_params(None))))
    assert main(["checkpoints", "export", f"{uri}/final", "--to", str(tmp_path / "x.safetensors"),
                 "--ckks-context", str(public)]) == 1
    assert "holds no CKKS secret key" in capsys.readouterr().err
