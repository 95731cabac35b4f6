"""Codecs: what each sends, how close the decoded update is, and bad wire data refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedkube.aggregator.accumulate import UpdateRejected, WeightedSum
from fedkube.compression import UpdateDecoder, build_codec
from fedkube.compression.topk import TopK
from fedkube.protocol.tensors import iter_chunks, specs_of
from fedkube.spec.model import CompressionSpec


def decode(kind: str, update: dict[str, np.ndarray], wire: dict[str, np.ndarray], chunk_bytes: int = 64,
           ratio: float | None = None) -> dict[str, np.ndarray]:
    """Feed `wire` through an UpdateDecoder into a WeightedSum in small chunks; the decoded update."""
    specs = specs_of(update)
    acc = WeightedSum(specs)
    decoder = UpdateDecoder(build_codec(CompressionSpec(kind, ratio)), specs, acc.begin(1.0))
    decoder.check_specs(specs_of(wire))
    for index, array in enumerate(wire.values()):
        offset = 0
        for chunk in iter_chunks([array], chunk_bytes):
            decoder.feed(index, offset, chunk)
            offset += len(chunk)
    decoder.fold.commit()
    return acc.mean()


def wire_bytes(wire: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in wire.values())


@pytest.fixture
def update() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"conv": rng.normal(0, 0.01, (16, 1, 3, 3)).astype(np.float32),
            "fc": rng.normal(0, 0.02, (10, 512)).astype(np.float32), "bias": np.zeros(10, np.float32)}


def test_fp16_halves_the_bytes_and_round_trips(update):
    wire = build_codec(CompressionSpec("fp16")).encode(update, 1)
    assert wire_bytes(wire) * 2 == sum(a.nbytes for a in update.values())
    for name, got in decode("fp16", update, wire).items():
        np.testing.assert_allclose(got, update[name], rtol=1e-3, atol=1e-7)


def test_int8_is_four_times_smaller_within_one_step_and_unbiased(update):
    codec = build_codec(CompressionSpec("int8"))
    wire = codec.encode(update, 1)
    assert sum(a.nbytes for a in update.values()) / wire_bytes(wire) > 3.9
    decoded = decode("int8", update, wire)
    for name, x in update.items():
        step = np.abs(x).max() / 127 if x.any() else 0
        assert np.all(np.abs(decoded[name] - x) <= step + 1e-9), name
    # Stochastic rounding: the mean of many encodings converges on x (plain rounding would not).
    fc = update["fc"]
    mean = np.mean([decode("int8", update, codec.encode(update, s))["fc"]
                    for s in range(200)], axis=0)
    step = np.abs(fc).max() / 127
    assert np.abs(mean - fc).max() < step / 4 < np.abs(np.round(fc / step) * step - fc).max() * 1.1


def test_topk_sends_the_largest_entries_and_feeds_the_rest_back():
    codec = TopK(ratio=0.25)
    rounds = [{"w": np.array([0.1, -4.0, 0.3, 0.2, 1.0, -0.05, 0.0, 0.6], np.float32)} for _ in range(4)]
    sent = []
    for update in rounds:
        wire = codec.encode(update, 0)
        np.testing.assert_array_equal(wire["w/indices"], np.sort(wire["w/indices"]))
        sent.append(decode("topk", update, wire, ratio=0.25)["w"])
    # Round 1 keeps the 2 largest magnitudes: -4.0 and 1.0.
    np.testing.assert_allclose(sent[0], [0, -4.0, 0, 0, 1.0, 0, 0, 0])
    # Error feedback: everything sent plus the residual equals everything produced, exactly.
    np.testing.assert_allclose(np.sum(sent, axis=0) + codec.residuals["w"], 4 * rounds[0]["w"], rtol=1e-6)
    # Small entries are not starved: 0.6 accumulated to 1.2 and went out in round 2.
    assert sent[1][7] == pytest.approx(1.2)


@pytest.mark.parametrize("kind, tamper, reason", [
    ("topk", lambda w: {**w, "w/indices": w["w/indices"][::-1].copy()}, "malformed"),
    ("topk", lambda w: {**w, "w/indices": np.array([0, 99], np.int32)}, "malformed"),
    ("int8", lambda w: {**w, "w/scale": np.array([np.nan], np.float32)}, "non_finite"),
    ("int8", lambda w: {"w": w["w"], "w/scale": w["w/scale"]}, "wrong_shape"),   # scale must come first
    ("fp16", lambda w: {"w": w["w"].astype(np.float32)}, "wrong_dtype"),         # uncompressed when int8 expected
])
def test_bad_wire_data_is_rejected_by_reason(kind, tamper, reason):
    update = {"w": np.arange(8, dtype=np.float32)}
    wire = tamper(build_codec(CompressionSpec(kind, 0.25 if kind == "topk" else None)).encode(update, 0))
    with pytest.raises(UpdateRejected) as info:
        decode(kind, update, wire, ratio=0.25 if kind == "topk" else None)
    assert info.value.reason == reason


def test_chunk_splitting_an_element_is_malformed():
    specs = specs_of({"w": np.zeros(4, np.float32)})
    decoder = UpdateDecoder(build_codec(CompressionSpec("fp16")), specs, WeightedSum(specs).begin(1.0))
    with pytest.raises(UpdateRejected, match="splits an element"):
        decoder.feed(0, 0, b"\x00\x01\x02")
