"""Tensors on the wire: headers up front, then data in chunks of at most 1 MiB.

Chunking keeps every message far below gRPC's 4 MB default and protobuf's 2 GB ceiling, so a
model of any size travels; receivers can consume each chunk as it arrives (the aggregator
folds it straight into a running sum) instead of holding whole messages.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from fedkube import buffers
from fedkube.protocol import fedkube_pb2 as pb

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one tensor: what a header promises."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @functools.cached_property
    def nbytes(self) -> int:
        """Cached: receivers ask for it for every chunk."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def header(self) -> pb.TensorHeader:
        """Built once per spec and shared: a message that takes it (e.g. `RoundInfo(tensors=...)`) copies it."""
        return self._header

    @functools.cached_property
    def _header(self) -> pb.TensorHeader:
        return pb.TensorHeader(name=self.name, dtype=self.dtype, shape=self.shape, nbytes=self.nbytes)


@functools.lru_cache(maxsize=4096)
def _spec(name: str, dtype: str, shape: tuple[int, ...]) -> TensorSpec:
    """One spec object per tensor: a model's tensors travel every round, so each spec's nbytes and header
    are computed once rather than per tensor per message."""
    return TensorSpec(name, dtype, shape)


@functools.lru_cache(maxsize=4096)
def _array_spec(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> TensorSpec:
    return _spec(name, dtype.name, shape)  # keyed by the dtype object: its name is a Python property


def specs_of(tensors: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    return [_array_spec(name, a.dtype, a.shape) for name, a in tensors.items()]


def spec_from_header(header: pb.TensorHeader) -> TensorSpec:
    return _spec(header.name, header.dtype, tuple(header.shape))


def byte_view(array: np.ndarray) -> memoryview:
    """The array's bytes without a copy (a contiguous copy only if it was not contiguous)."""
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def chunk_views(tensors: Iterable[np.ndarray], chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """Each tensor's bytes in order, cut into chunks, as views (no copy)."""
    for array in tensors:
        view = byte_view(array)
        for start in range(0, len(view), chunk_bytes):
            yield view[start:start + chunk_bytes]


def iter_chunks(tensors: Iterable[np.ndarray], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Each tensor's bytes in order, cut into chunks; one chunk is copied at a time."""
    for view in chunk_views(tensors, chunk_bytes):
        yield bytes(view)


def inline_payload(tensors: Iterable[np.ndarray]) -> bytes | None:
    """Every tensor's bytes back to back when they fit in one chunk, to travel inside the header
    message (RoundInfo.inline, UpdateInfo.inline) instead of as data messages; None if they do not."""
    views = [byte_view(a) for a in tensors]
    return b"".join(views) if sum(len(v) for v in views) <= CHUNK_BYTES else None


def inline_chunks(specs: list[TensorSpec], inline: bytes) -> list[memoryview]:
    """An inline payload cut at tensor boundaries: the data chunks it stands for. A payload of the
    wrong length yields chunks that ChunkCursor refuses."""
    view, chunks, start = memoryview(inline), [], 0
    for spec in specs:
        if spec.nbytes and start < len(view):
            chunks.append(view[start:start + spec.nbytes])
            start += spec.nbytes
    return chunks + ([view[start:]] if start < len(view) else [])


def inline_tensors(specs: list[TensorSpec], inline: bytes) -> dict[str, np.ndarray]:
    """An inline payload's tensors as read-only views of it: a small model's round arrives without a copy
    or a buffer of its own. Raises ValueError if its length is not what the headers announce."""
    expected = sum(s.nbytes for s in specs)
    if len(inline) != expected:
        raise ValueError(f"inline payload of {len(inline)} bytes where the headers announce {expected}")
    arrays, start = {}, 0
    for spec in specs:
        arrays[spec.name] = np.frombuffer(inline, spec.dtype, math.prod(spec.shape), start).reshape(spec.shape)
        start += spec.nbytes
    return arrays


def data_envelopes(tensors: Iterable[np.ndarray]) -> Iterator[pb.Envelope]:
    for chunk in iter_chunks(tensors):
        yield pb.Envelope(data=chunk)


class ChunkCursor:
    """Tracks which tensor and byte offset the next chunk belongs to, and checks chunk sizes."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self.index = 0
        self.offset = 0
        self._skip_empty()

    def _skip_empty(self) -> None:
        while self.index < len(self.specs) and self.specs[self.index].nbytes == 0:
            self.index += 1

    @property
    def done(self) -> bool:
        return self.index >= len(self.specs)

    def advance(self, size: int) -> tuple[int, int]:
        """Place a chunk of `size` bytes; returns (tensor index, byte offset). Raises ValueError."""
        if self.done:
            raise ValueError("more data than the headers announced")
        spec = self.specs[self.index]
        if size == 0 or self.offset + size > spec.nbytes:
            raise ValueError(f"chunk of {size} bytes does not fit tensor {spec.name!r} "
                             f"({spec.nbytes - self.offset} bytes left)")
        place = (self.index, self.offset)
        self.offset += size
        if self.offset == spec.nbytes:
            self.index, self.offset = self.index + 1, 0
            self._skip_empty()
        return place


def receive_tensors(specs: list[TensorSpec], chunks: Iterable[bytes]) -> dict[str, np.ndarray]:
    """Reassemble tensors from their chunks into arrays the caller owns (client side): a round's buffers
    given back (fedkube.buffers) or new ones."""
    arrays = {s.name: buffers.empty(s.shape, s.dtype) for s in specs}
    flats = [byte_view(arrays[s.name]) for s in specs]
    cursor = ChunkCursor(specs)
    for chunk in chunks:
        index, offset = cursor.advance(len(chunk))
        flats[index][offset:offset + len(chunk)] = chunk
    if not cursor.done:
        raise ValueError(f"stream ended before tensor {specs[cursor.index].name!r} was complete")
    return arrays
