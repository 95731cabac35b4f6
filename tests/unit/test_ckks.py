"""CKKS aggregation: ciphertext sums match plaintext ones, bad ciphertexts are refused, keys stay apart."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fedkube.aggregator.accumulate import UpdateRejected
from fedkube.he.aggregate import CiphertextSum
from fedkube.he.codec import decrypt_mean, encrypt_weighted
from fedkube.he.keys import ensure_secret_file, load_context, make_context, public_bytes, public_context, secret_bytes
from fedkube.he.params import CkksParams, ckks_params
from fedkube.he.session import CkksClientCodec, aggregator_strategy
from fedkube.he.wire import is_encrypted
from fedkube.protocol.tensors import ChunkCursor, iter_chunks, specs_of
from fedkube.spec import SpecError, parse_manifest
from fedkube.spec.model import CkksSpec

PARAMS = ckks_params(None)


@pytest.fixture(scope="module")
def contexts():
    """The clients' secret context and the aggregator's, made from the parameters alone."""
    return load_context(secret_bytes(make_context(PARAMS))), public_context(PARAMS)


def random_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    # 9,127 values: two full ciphertexts of 4,096 and a partial third.
    return {"conv.weight": rng.normal(size=(30, 3, 10, 10)).astype(np.float32),
            "conv.bias": rng.normal(size=(30,)).astype(np.float32),
            "fc.weight": rng.normal(size=(10, 9, 3)).astype(np.float32),
            "fc.bias": rng.normal(size=(127 - 30,)).astype(np.float32)}


def stream(acc: CiphertextSum, encrypted: dict[str, np.ndarray], weight: float, chunk_bytes: int = 50_000):
    """Feed one encrypted update the way the coordinator does: headers, then cut chunks."""
    fold = acc.begin(weight)
    specs = specs_of(encrypted)
    fold.check_specs(specs)
    cursor = ChunkCursor(specs)
    for chunk in iter_chunks(encrypted.values(), chunk_bytes):
        fold.feed(*cursor.advance(len(chunk)), chunk)
    return fold


def test_decrypted_aggregate_matches_the_weighted_mean_within_1e_minus_6(contexts):
    secret, public = contexts
    rng = np.random.default_rng(1)
    template = random_model(rng)
    acc = CiphertextSum(public, PARAMS, specs_of(template))
    clients = [random_model(rng) for _ in range(5)]
    examples = [17, 250, 3, 98, 41]
    for model, n in zip(clients, examples, strict=True):
        stream(acc, encrypt_weighted(secret, PARAMS.slots, model, n), n).commit()
    result = decrypt_mean(secret, acc.encrypted())
    assert list(result) == list(template) and all(result[k].dtype == np.float32 for k in result)
    for name in template:
        expected = sum(n * c[name].astype(np.float64) for c, n in zip(clients, examples, strict=True)) / sum(examples)
        relative = np.linalg.norm(result[name] - expected) / np.linalg.norm(expected)
        assert relative < 1e-6, name


def test_an_aborted_update_leaves_the_sum_as_if_it_never_came(contexts):
    secret, public = contexts
    rng = np.random.default_rng(2)
    template = random_model(rng)
    acc = CiphertextSum(public, PARAMS, specs_of(template))
    kept, dropped = random_model(rng), random_model(rng)
    stream(acc, encrypt_weighted(secret, PARAMS.slots, kept, 10), 10).commit()
    stream(acc, encrypt_weighted(secret, PARAMS.slots, dropped, 30), 30).abort()
    result = decrypt_mean(secret, acc.encrypted())
    for name in template:
        np.testing.assert_allclose(result[name], kept[name], atol=1e-5)


def test_the_aggregator_context_cannot_decrypt_and_refuses_to_be_secret(contexts, tmp_path):
    secret, public = contexts
    assert not public.is_private() and not public.has_public_key()
    template = random_model(np.random.default_rng(3))
    acc = CiphertextSum(public, PARAMS, specs_of(template))
    stream(acc, encrypt_weighted(secret, PARAMS.slots, template, 1.0), 1.0).commit()
    with pytest.raises(PermissionError, match="no secret key"):
        decrypt_mean(public, acc.encrypted())
    with pytest.raises(ValueError, match="public CKKS context"):
        CiphertextSum(secret, PARAMS, [])
    secret_path = ensure_secret_file(tmp_path / "keys", PARAMS)
    assert secret_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    public_file = tmp_path / "public.ctx"
    public_file.write_bytes(public_bytes(make_context(PARAMS)))
    with pytest.raises(ValueError, match="cannot decrypt the global model"):
        CkksClientCodec(public_file, PARAMS)
    with pytest.raises(ValueError, match="needs --ckks-context"):
        CkksClientCodec(None, PARAMS)
    before = secret_path.read_bytes()
    assert ensure_secret_file(tmp_path / "keys", PARAMS) == secret_path and secret_path.read_bytes() == before


def test_client_codec_passes_the_initial_model_and_decrypts_later_ones(tmp_path):
    codec = CkksClientCodec(ensure_secret_file(tmp_path / "keys", PARAMS), PARAMS)
    model = random_model(np.random.default_rng(4))
    assert codec.global_weights(model) is model
    acc = aggregator_strategy(PARAMS, model).new_round(specs_of(model))
    stream(acc, codec.update(model, 7), 7).commit()
    aggregate = acc.encrypted()
    assert is_encrypted(aggregate)
    for name, value in codec.global_weights(aggregate).items():
        np.testing.assert_allclose(value, model[name], atol=1e-5)


@pytest.mark.parametrize("damage, reason", [
    (lambda enc: {k: v for k, v in list(enc.items())[:-1]}, "wrong_shape"),                  # a ciphertext short
    (lambda enc: {**enc, "ckks/000000": enc["ckks/000000"][:5000]}, "malformed"),             # truncated bytes
    (lambda enc: {**enc, "ckks/000000": np.zeros(1000, np.uint8)}, "malformed"),              # garbage
    (lambda enc: {**enc, "ckks/000000": enc["ckks/000000"].astype(np.int16)}, "wrong_dtype"),
    (lambda enc: {**enc, "ckks/000000": np.zeros(10 << 20, np.uint8)}, "wrong_shape"),        # oversized
])
def test_bad_ciphertexts_are_rejected_with_a_reason(contexts, damage, reason):
    secret, public = contexts
    template = random_model(np.random.default_rng(5))
    acc = CiphertextSum(public, PARAMS, specs_of(template))
    bad = damage(encrypt_weighted(secret, PARAMS.slots, template, 1.0))
    with pytest.raises(UpdateRejected) as info:
        stream(acc, bad, 1.0)
    assert info.value.reason == reason


def test_ciphertexts_that_pack_the_wrong_count_or_other_parameters_are_rejected(contexts):
    secret, public = contexts
    template = random_model(np.random.default_rng(6))
    acc = CiphertextSum(public, PARAMS, specs_of(template))
    encrypted = encrypt_weighted(secret, PARAMS.slots, template, 1.0)
    short = encrypt_weighted(secret, PARAMS.slots, {"x": np.ones(100, np.float32)}, 1.0)["ckks/000000"]
    with pytest.raises(UpdateRejected, match="packs 100 values") as info:
        stream(acc, {**encrypted, "ckks/000000": short}, 1.0)
    assert info.value.reason == "wrong_shape"
    other = make_context(CkksParams(8192, 30, (60, 30, 60)))
    foreign = encrypt_weighted(other, PARAMS.slots, template, 1.0)
    with pytest.raises(UpdateRejected) as info:
        stream(acc, foreign, 1.0)
    assert info.value.reason == "malformed"


BASE = {
    "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "he"},
    "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 4}, "rounds": 3,
             "clients": {"minAvailable": 3}, "secureAggregation": {"mode": "ckks"}},
}


def with_spec(**changes):
    doc = copy.deepcopy(BASE)
    doc["spec"].update(changes)
    return doc


def test_a_ckks_manifest_with_defaults_validates():
    job = parse_manifest(with_spec(strategy={"name": "fedprox", "mu": 0.01}))
    assert ckks_params(job.spec.secure_aggregation.ckks) == CkksParams(8192, 40, (60, 40, 60))
    assert ckks_params(CkksSpec(poly_modulus_degree=4096)).coeff_mod_bits == (60, 49)


@pytest.mark.parametrize("changes, path, message", [
    ({"strategy": {"name": "fedadam"}}, "spec.strategy.name", "'fedadam' needs plaintext updates"),
    ({"strategy": {"name": "scaffold"}}, "spec.strategy.name", "'scaffold' needs plaintext updates"),
    ({"strategy": {"name": "fedavg", "serverLr": 0.5}}, "spec.strategy.serverLr", "server learning rate"),
    ({"compression": {"kind": "int8"}}, "spec.compression.kind", "ciphertexts do not compress"),
    ({"secureAggregation": {"mode": "ckks", "ckks": {"polyModulusDegree": 4096, "coeffModBits": [60, 40, 60]}}},
     "spec.secureAggregation.ckks.coeffModBits", "exceeds 109"),
    ({"secureAggregation": {"mode": "ckks", "ckks": {"scaleBits": 50, "coeffModBits": [60, 50, 60]}}},
     "spec.secureAggregation.ckks.scaleBits", "headroom"),
    ({"secureAggregation": {"mode": "ckks", "ckks": {"coeffModBits": [60]}}},
     "spec.secureAggregation.ckks.coeffModBits", "at least 2 moduli"),
    ({"secureAggregation": {"mode": "none", "ckks": {"scaleBits": 40}}},
     "spec.secureAggregation.ckks", "only used with mode ckks"),
])
def test_ckks_manifests_that_cannot_work_are_refused_with_field_paths(changes, path, message):
    with pytest.raises(SpecError) as info:
        parse_manifest(with_spec(**changes))
    assert any(e.path == path and message in e.message for e in info.value.errors), info.value
