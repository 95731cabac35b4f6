"""The client's end of its Session stream: every round of the job on one gRPC call.

gRPC's synchronous client starts a thread for each streamed call and sets up an HTTP/2 stream for
each; two calls a round made that most of what a round of a small model cost. Here one request
iterator, fed from a queue, lives as long as the job, and each round is two messages.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterable, Iterator

import grpc

from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol.tensors import inline_tensors, receive_tensors, spec_from_header
from fedkube.protocol.wire import data_chunks, parse_envelope, raw_session
from fedkube.weights import Weights

log = logging.getLogger(__name__)

Message = pb.Envelope | bytes  # protobuf, or prebuilt wire bytes (data_messages)


def _log_verdict(round_number: int, reply: pb.SubmitReply) -> None:
    if reply.accepted:
        log.debug("round %d: update accepted", round_number)
    else:
        log.warning("round %d: update rejected: %s", round_number, reply.reason)


class SessionEnded(RuntimeError):
    """The aggregator closed the session without JobDone (a restart, or a refused update)."""


class TaskStream:
    def __init__(self, channel: grpc.Channel, partition: int, session: str) -> None:
        self._outbox: queue.SimpleQueue[Iterable[Message] | None] = queue.SimpleQueue()
        self._outbox.put([pb.Envelope(next=pb.TaskRequest(partition=partition, session=session))])
        self._replies = raw_session(channel)(self._requests())
        self._submitted = 0  # the round of the last update sent, for a refusal that comes later

    def _requests(self) -> Iterator[Message]:
        """What gRPC sends, in order; runs in gRPC's thread for this call."""
        while (envelopes := self._outbox.get()) is not None:
            yield from envelopes

    def _raw(self) -> bytes:
        try:
            return next(self._replies)
        except StopIteration:
            raise SessionEnded("the aggregator closed the session") from None

    def _receive(self) -> pb.Envelope:
        return parse_envelope(self._raw())

    def next_task(self) -> pb.RoundInfo | pb.JobDone:
        """Block until the aggregator selects us for a round or the job ends; the round's weights follow.

        A verdict on the last update that nobody waited for (a refusal) is logged on the way."""
        first = self._receive()
        while first.HasField("reply"):
            _log_verdict(self._submitted, first.reply)
            first = self._receive()
        return first.done if first.HasField("done") else first.round

    def weights(self, info: pb.RoundInfo) -> Weights:
        """The round's global weights: inline, or the data messages that follow its header."""
        specs = [spec_from_header(h) for h in info.tensors]
        if info.inline:
            return inline_tensors(specs, info.inline)
        return receive_tensors(specs, self._data(sum(s.nbytes for s in specs)))

    def _data(self, nbytes: int) -> Iterator[memoryview]:
        """Exactly `nbytes` of data chunks off the stream; the next message is left for the session."""
        if nbytes <= 0:
            return
        for chunk in data_chunks(iter(self._raw, None)):
            yield chunk
            nbytes -= len(chunk)
            if nbytes <= 0:
                return

    def submit(self, round_number: int, update: Iterable[Message]) -> None:
        """Send an update (UpdateInfo, then its data chunks unless inline); a refusal comes later, if at all."""
        self._submitted = round_number
        self._outbox.put(update)

    def verdict(self) -> pb.SubmitReply | pb.SecAggReply:
        """The answer to a SecAgg+ masked vector: a refusal (logged), or, accepted, the survivor lists."""
        answer = self._receive()
        if answer.HasField("reply"):
            _log_verdict(self._submitted, answer.reply)
            return answer.reply
        if not answer.HasField("secagg_reply"):
            raise SessionEnded("the aggregator answered a masked vector with something else")
        return answer.secagg_reply

    def send(self, envelope: pb.Envelope) -> None:
        """A message of the round just served that waits for no answer here (e.g. a SecAgg+ step)."""
        self._outbox.put([envelope])

    def secagg_reply(self) -> pb.SecAggReply:
        """The aggregator's answer to our last SecAgg+ step."""
        reply = self._receive()
        if not reply.HasField("secagg_reply"):
            raise SessionEnded("the aggregator answered a SecAgg+ step with something else")
        return reply.secagg_reply

    def pass_round(self) -> None:
        """End the round just served: without an update (e.g. a secure aggregation attempt left), or, with
        SecAgg+, after an update that was refused or brought no reveal."""
        self._outbox.put([pb.Envelope(next=pb.TaskRequest())])

    def close(self) -> None:
        self._outbox.put(None)
        self._replies.cancel()
