"""Tensors cut into chunks and put back together, and the stubs kept in sync with the .proto."""

import numpy as np
import pytest

from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import generate
from fedkube.protocol.tensors import (
    CHUNK_BYTES,
    ChunkCursor,
    inline_payload,
    inline_tensors,
    iter_chunks,
    receive_tensors,
    spec_from_header,
    specs_of,
)


def test_round_trip_mixed_dtypes_and_empty_tensors():
    rng = np.random.default_rng(0)
    tensors = {
        "big": rng.standard_normal(CHUNK_BYTES // 4 * 2 + 7).astype(np.float32),   # spans 3 chunks
        "empty": np.zeros((0, 3), dtype=np.float32),
        "half": rng.standard_normal((5, 4)).astype(np.float16),
        "double": rng.standard_normal(3),
    }
    chunks = list(iter_chunks(tensors.values()))
    assert all(0 < len(c) <= CHUNK_BYTES for c in chunks)
    out = receive_tensors(specs_of(tensors), chunks)
    for name, array in tensors.items():
        assert out[name].dtype == array.dtype and out[name].shape == array.shape
        np.testing.assert_array_equal(out[name], array)


@pytest.mark.parametrize("sizes, error", [
    ([4, 8], "does not fit"),          # second chunk overruns the first tensor's 8 bytes
    ([8, 4, 4], "more data"),          # data after every tensor is complete
    ([8], "before tensor"),            # stream ends early
])
def test_cursor_refuses_chunks_that_do_not_match_the_headers(sizes, error):
    specs = specs_of({"a": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match=error):
        receive_tensors(specs, [b"\0" * n for n in sizes])


def test_cursor_places_chunks_by_tensor_and_offset():
    cursor = ChunkCursor(specs_of({"a": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)}))
    assert [cursor.advance(8), cursor.advance(8), cursor.advance(8)] == [(0, 0), (0, 8), (1, 0)]
    assert cursor.done


def test_checked_in_stubs_match_the_proto():
    assert generate.check() == [], "run `make proto` to regenerate the gRPC stubs"


def test_specs_are_made_once_per_tensor_and_their_shared_headers_are_copied_into_messages():
    arrays = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float16)}
    specs = specs_of(arrays)
    assert [(s.name, s.dtype, s.shape, s.nbytes) for s in specs] == [("w", "float32", (3, 4), 48),
                                                                     ("b", "float16", (4,), 8)]
    assert all(a is b for a, b in zip(specs_of(dict(arrays)), specs, strict=True))
    info = pb.RoundInfo(tensors=[s.header() for s in specs])
    assert [spec_from_header(h) for h in info.tensors] == specs
    assert spec_from_header(info.tensors[0]) is specs[0]
    info.tensors[0].shape[:] = [4, 3]  # a message's copy changes, not the spec's header
    assert spec_from_header(info.tensors[0]).shape == (4, 3) and tuple(specs[0].header().shape) == (3, 4)
    assert specs_of({"w": np.zeros((3, 4), np.float64)})[0].dtype == "float64"


def test_an_inline_payload_arrives_as_read_only_views_of_it_and_must_have_the_announced_length():
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "none": np.zeros((0, 4), np.float32),
              "h": np.array([1.5, -2], np.float16), "last": np.zeros(0, np.int8)}
    specs, payload = specs_of(arrays), inline_payload(arrays.values())
    received = inline_tensors(specs, payload)
    assert list(received) == list(arrays)
    for name, array in arrays.items():
        assert received[name].dtype == array.dtype and received[name].shape == array.shape
        np.testing.assert_array_equal(received[name], array)
        assert not received[name].flags.writeable
    for wrong in (payload[:-1], payload + b"\0"):
        with pytest.raises(ValueError, match=f"inline payload of {len(wrong)} bytes where the headers announce 28"):
            inline_tensors(specs, wrong)

