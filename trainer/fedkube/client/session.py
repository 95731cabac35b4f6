"""The client's end of its Session stream: every round of the job on one gRPC call.

gRPC's synchronous client starts a thread for each streamed call and sets up an HTTP/2 stream for
each; two calls a round made that most of what a round of a small model cost. Here one request
iterator, fed from a queue, lives as long as the job, and each round is three messages.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable, Iterator

from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import inline_chunks, receive_tensors, spec_from_header
from fedkube.weights import Weights


class SessionEnded(RuntimeError):
    """The aggregator closed the session without JobDone (a restart, or a refused update)."""


class TaskStream:
    def __init__(self, stub: pb_grpc.AggregatorStub, partition: int, session: str) -> None:
        self._outbox: queue.SimpleQueue[Iterable[pb.Envelope] | None] = queue.SimpleQueue()
        self._outbox.put([pb.Envelope(next=pb.TaskRequest(partition=partition, session=session))])
        self._replies = stub.Session(self._requests())

    def _requests(self) -> Iterator[pb.Envelope]:
        """What gRPC sends, in order; runs in gRPC's thread for this call."""
        while (envelopes := self._outbox.get()) is not None:
            yield from envelopes

    def _receive(self) -> pb.Envelope:
        try:
            return next(self._replies)
        except StopIteration:
            raise SessionEnded("the aggregator closed the session") from None

    def next_task(self) -> tuple[pb.RoundInfo, Weights] | pb.JobDone:
        """Block until the aggregator selects us for a round (its weights come with it) or the job ends."""
        first = self._receive()
        if first.HasField("done"):
            return first.done
        info = first.round
        specs = [spec_from_header(h) for h in info.tensors]
        if info.inline:
            return info, receive_tensors(specs, inline_chunks(specs, info.inline))
        left = sum(s.nbytes for s in specs)

        def chunks() -> Iterator[bytes]:
            nonlocal left
            while left > 0:
                data = self._receive().data  # anything but data is empty, which receive_tensors refuses
                left -= len(data)
                yield data

        return info, receive_tensors(specs, chunks())

    def submit(self, update: Iterable[pb.Envelope]) -> pb.SubmitReply:
        """Send an update (UpdateInfo, then its data chunks unless inline) and wait for the verdict."""
        self._outbox.put(update)
        reply = self._receive()
        if not reply.HasField("reply"):
            raise SessionEnded("the aggregator answered an update with something else than a reply")
        return reply.reply

    def pass_round(self) -> None:
        """Answer the round just served without an update (e.g. a secure aggregation attempt left)."""
        self._outbox.put([pb.Envelope(next=pb.TaskRequest())])

    def close(self) -> None:
        self._outbox.put(None)
        self._replies.cancel()
