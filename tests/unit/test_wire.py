"""Raw data chunks on the aggregator's side: byte-identical to protobuf, read without copies,
and SubmitUpdate driven through the handler exactly as gRPC registers it."""

import asyncio

import numpy as np
import pytest

from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.identity import PeerGuard
from fedkube.aggregator.servicer import AggregatorServicer
from fedkube.plan import make_plan
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol.tensors import data_envelopes, inline_payload, specs_of
from fedkube.protocol.wire import (
    aggregator_handlers,
    data_chunks,
    data_message,
    data_messages,
    data_payload,
    round_message,
    update_message,
)
from fedkube.spec import parse_manifest
from fedkube.strategies import build_strategy


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1 << 20])
def test_data_messages_are_byte_identical_to_protobuf(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = data_message(payload)
    assert raw == pb.Envelope(data=payload).SerializeToString()
    view = data_payload(raw)
    assert isinstance(view, memoryview) and view.obj is raw and view == payload


def test_a_round_message_from_a_shared_part_and_a_clients_own_reads_as_one_round_info():
    arrays = {"w": np.arange(3, dtype=np.float32)}
    shared = pb.RoundInfo(round=7, rounds=9, tensors=[s.header() for s in specs_of(arrays)],
                          inline=inline_payload(arrays.values()))
    own = pb.RoundInfo(ticket="t-3", config_json='{"lr": 0.1}')
    envelope = pb.Envelope.FromString(round_message(shared.SerializeToString(), own.SerializeToString()))
    expected = pb.RoundInfo()
    expected.CopyFrom(shared)
    expected.MergeFrom(own)
    assert envelope.WhichOneof("body") == "round" and envelope.round == expected
    assert envelope.round.ticket == "t-3" and envelope.round.round == 7
    big = pb.RoundInfo(inline=b"x" * 300).SerializeToString()  # a length past one varint byte
    assert pb.Envelope.FromString(round_message(big, own.SerializeToString())).round.inline == b"x" * 300


@pytest.mark.parametrize("inline", [b"", b"\1" * 200])
def test_update_messages_are_byte_identical_to_protobuf(inline):
    info = pb.UpdateInfo(partition=3, round=2, ticket="t", num_examples=5, metrics={"loss": 0.5}, inline=inline)
    assert update_message(info) == pb.Envelope(update=info).SerializeToString()


def test_data_followed_by_unknown_fields_is_still_read():
    raw = pb.Envelope(data=b"abc").SerializeToString() + b"\x58\x01"  # field 11, varint 1
    assert bytes(data_payload(raw)) == b"abc"


def test_other_envelopes_are_not_data_and_garbage_is_refused():
    assert data_payload(pb.Envelope(done=pb.JobDone(succeeded=True)).SerializeToString()) is None
    with pytest.raises(ValueError, match="not an Envelope"):
        data_payload(b"\x1a\x05ab")  # announces 5 bytes, carries 2


def test_only_submit_update_and_get_task_change_their_wire_handling():
    handlers = aggregator_handlers(AggregatorServicer(None, dict, PeerGuard("wire", tls=False)))
    assert {"Join", "GetTask", "SubmitUpdate", "Status"} <= set(handlers)
    assert handlers["SubmitUpdate"].request_deserializer is None
    assert handlers["GetTask"].response_serializer(b"raw") == b"raw"
    assert handlers["Join"].request_deserializer == pb.JoinRequest.FromString


async def _submit(messages_for):
    """One round of two clients whose SubmitUpdate streams go through the registered handler."""
    manifest = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "wire"},
                "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 2},
                         "rounds": 1, "clients": {"minAvailable": 1, "roundTimeoutSeconds": 30}}}
    plan = make_plan(parse_manifest(manifest, check_entrypoint=False)).aggregator
    coordinator = Coordinator(plan)
    submit = aggregator_handlers(AggregatorServicer(coordinator, dict, PeerGuard("wire", tls=False)))["SubmitUpdate"]
    specs = specs_of({"w": np.zeros(3, np.float32)})
    sessions = [await coordinator.join(p) for p in range(2)]
    strategy = build_strategy(plan.strategy, plan.num_partitions)
    round_task = asyncio.create_task(coordinator.run_round(1, {}, specs, strategy))
    replies = []
    for p in range(2):
        state = await coordinator.next_task(p, sessions[p])
        info = pb.Envelope(update=pb.UpdateInfo(partition=p, round=1, ticket=state.tickets[p], num_examples=p + 1,
                                                tensors=[s.header() for s in specs]))

        async def stream(messages):
            for m in messages:
                yield m
        replies.append(await submit.stream_unary(stream([info.SerializeToString(), *messages_for(p)]), None))
    return replies, await round_task


async def test_updates_fold_from_raw_messages_and_malformed_ones_are_rejected():
    good = [e.SerializeToString() for e in data_envelopes([np.array([3.0, 6.0, 9.0], np.float32)])]
    bad = [pb.Envelope(done=pb.JobDone()).SerializeToString()]
    replies, outcome = await _submit(lambda p: good if p == 0 else bad)
    assert replies[0].accepted and not replies[1].accepted and replies[1].reason.startswith("malformed")
    assert outcome.rejected == {1: "malformed"}
    np.testing.assert_allclose(outcome.accumulator.mean()["w"], [3.0, 6.0, 9.0])


def test_clients_raw_messages_match_protobufs_and_only_data_may_follow():
    tensors = [np.arange(300_000, dtype=np.float32), np.ones((2, 3), np.float64)]
    raw = list(data_messages(tensors))
    assert raw == [e.SerializeToString() for e in data_envelopes(tensors)]
    assert b"".join(bytes(c) for c in data_chunks(raw)) == b"".join(t.tobytes() for t in tensors)
    with pytest.raises(ValueError, match="only data chunks"):
        list(data_chunks([raw[0], pb.Envelope(done=pb.JobDone()).SerializeToString()]))
