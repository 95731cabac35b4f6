"""Data chunks (and a round's instructions) as raw bytes on both sides of the wire, without protobuf copies.

A data envelope is a single length-delimited field: tag 0x1a, a varint length, the payload. So the
aggregator can fold a received chunk straight from the buffer gRPC hands over (a zero-copy view),
a client can copy one straight into its model's array, and either sends one as a single bytes
object, instead of paying protobuf's parse, field and serialise copies, which cost more than
folding the chunk itself. Every other message goes through protobuf.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import chunk_views

SERVICE = "fedkube.v1.Aggregator"
DATA_TAG = b"\x1a"  # Envelope.data: field 3, wire type 2 (length-delimited)
ROUND_TAG = b"\x0a"  # Envelope.round: field 1, wire type 2
UPDATE_TAG = b"\x12"  # Envelope.update: field 2, wire type 2
# Both ends: a message is a chunk of at most 1 MiB or a header, so 8 MiB leaves room without a 2 GB ceiling.
GRPC_OPTIONS = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]


def _varint(raw: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; (-1, pos) if it is cut short."""
    value = shift = 0
    while pos < len(raw) and shift < 64:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return -1, pos


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _envelope(tag: bytes, *parts: bytes | memoryview) -> bytes:
    """A serialised Envelope of one length-delimited field whose bytes are `parts` back to back, with one copy."""
    return b"".join((tag, encode_varint(sum(len(p) for p in parts)), *parts))


def data_message(payload: bytes | memoryview) -> bytes:
    """A serialised data Envelope, built with one copy of the payload."""
    return _envelope(DATA_TAG, payload)


def round_message(shared: bytes, own: bytes) -> bytes:
    """A serialised round Envelope from two serialised RoundInfo parts. Protobuf reads concatenated messages
    as one with the fields of both, so what every client of a round gets (its weights inline, the headers)
    is encoded once a round, and only each client's ticket and settings once per client."""
    return _envelope(ROUND_TAG, shared, own)


def update_message(info: pb.UpdateInfo) -> bytes:
    """A serialised update Envelope, without copying `info` into an Envelope first."""
    return _envelope(UPDATE_TAG, info.SerializeToString())


def data_messages(tensors: Iterable[Any]) -> Iterator[bytes]:
    """Each tensor's bytes as serialised data Envelopes of at most one chunk each."""
    for chunk in chunk_views(tensors):
        yield data_message(chunk)


def parse_envelope(raw: bytes) -> pb.Envelope:
    """A received Envelope; ValueError if the bytes are not one."""
    try:
        return pb.Envelope.FromString(raw)
    except DecodeError as exc:
        raise ValueError(f"not an Envelope message: {exc}") from exc


def data_payload(raw: bytes) -> memoryview | None:
    """A data envelope's payload as a view of `raw` (no copy); None for any other envelope."""
    if raw[:1] == DATA_TAG:
        length, start = _varint(raw, 1)
        if start + length == len(raw):
            return memoryview(raw)[start:]
    envelope = parse_envelope(raw)  # a data field followed by unknown fields, or another message
    return memoryview(envelope.data) if envelope.HasField("data") else None


def data_chunks(messages: Iterable[bytes]) -> Iterator[memoryview]:
    """The payloads of a stream of data envelopes, as views; ValueError at any other message."""
    for raw in messages:
        payload = data_payload(raw)
        if payload is None:
            raise ValueError("only data chunks may follow the tensor headers")
        yield payload


def _serialize(message: Any) -> bytes:
    """Responses may be prebuilt wire bytes (data chunks) or protobuf messages."""
    return message if isinstance(message, bytes) else message.SerializeToString()


class _HandlerCapture:
    """Stands in for a server to collect the method handlers the generated code registers."""

    handlers: dict[str, grpc.RpcMethodHandler]

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers = handlers


def aggregator_handlers(servicer: pb_grpc.AggregatorServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The generated handlers, except that SubmitUpdate and Session receive, and GetTask and Session
    may send, raw bytes."""
    capture = _HandlerCapture()
    pb_grpc.add_AggregatorServicer_to_server(servicer, capture)
    handlers = dict(capture.handlers)
    handlers["SubmitUpdate"] = grpc.stream_unary_rpc_method_handler(
        servicer.SubmitUpdate, request_deserializer=None, response_serializer=pb.SubmitReply.SerializeToString)
    handlers["GetTask"] = grpc.unary_stream_rpc_method_handler(
        servicer.GetTask, request_deserializer=pb.TaskRequest.FromString, response_serializer=_serialize)
    handlers["Session"] = grpc.stream_stream_rpc_method_handler(
        servicer.Session, request_deserializer=None, response_serializer=_serialize)
    return handlers


def add_aggregator_service(servicer: pb_grpc.AggregatorServicer, server: grpc.aio.Server) -> None:
    handlers = aggregator_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def raw_session(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable:
    """The client's Session: it sends protobuf messages or prebuilt wire bytes (data_messages) and
    receives raw bytes: read headers with parse_envelope, data with data_chunks."""
    return channel.stream_stream(f"/{SERVICE}/Session", request_serializer=_serialize, response_deserializer=None)
