"""A client's part in one SecAgg+ attempt, on its Session stream.

The keys go out as soon as the round is served, while its weights stream in; once the weights are
in, the shares are exchanged (each exchange waits for every other participant) and the total
mask is expanded in a background thread while the client trains: none of it depends on the
update, so training hides the mask's cost. The masked vector (the update encoded onto that mask)
replaces the plain update; after it, the client answers the unmasking query with exactly one share
per neighbour. The client keeps its last attempt until the next round, so that an aggregator
restarted mid-unmasking, serving that attempt again, gets the same shares once more.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from fedkube import buffers
from fedkube.client.session import SessionEnded, TaskStream
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.secure.secagg import MASKED_TENSOR, ClientSession, ProtocolError, RoundSetup

log = logging.getLogger(__name__)


class SecAggParticipant:
    def __init__(self, info: pb.RoundInfo, partition: int, config: Mapping[str, Any]) -> None:
        self.info, self.partition = info, partition
        self.session = ClientSession(RoundSetup.from_json(config), partition)
        self.mask: Future[np.ndarray] = Future()
        self.masked = False  # our masked vector was made: from now on we only ever reveal
        self.vector: np.ndarray | None = None  # the masked vector, until it is delivered

    def serves_again(self, info: pb.RoundInfo) -> bool:
        """Whether `info` is our attempt served again: a restarted aggregator finishing its unmasking."""
        setup = json.loads(info.config_json or "{}").get("secagg") or {}
        return info.round == self.info.round and setup.get("nonce") == self.session.setup.nonce

    def _send(self, stream: TaskStream, **step: Any) -> None:
        stream.send(pb.Envelope(secagg=pb.SecAggRequest(round=self.info.round, ticket=self.info.ticket, **step)))

    @staticmethod
    def _answer(stream: TaskStream, step: str, reply: pb.SecAggReply | None = None) -> Any:
        """The aggregator's answer to our last step (`reply` if already read); ProtocolError when it
        abandoned the attempt."""
        reply = stream.secagg_reply() if reply is None else reply
        kind = reply.WhichOneof("step")
        if kind == "abandoned":
            raise ProtocolError(reply.abandoned)
        if kind != step:
            raise SessionEnded(f"the aggregator answered a SecAgg+ step with {kind!r}, not {step!r}")
        return getattr(reply, step)

    def advertise(self, stream: TaskStream) -> None:
        """Step 1, as the round is served: our public keys (answered once every participant's are in)."""
        c_key, s_key = self.session.advert()
        self._send(stream, advertise=pb.PeerKeys(partition=self.partition, cipher_key=c_key, mask_key=s_key))

    def share(self, stream: TaskStream) -> None:
        """Step 2: the neighbours' keys in, our sealed shares out, theirs to us in; then the mask, in the background."""
        keys = {k.partition: (k.cipher_key, k.mask_key) for k in self._answer(stream, "keys").peers}
        sealed = self.session.share(keys)
        self._send(stream, share=pb.SealedShares(shares=[pb.SealedShare(partition=p, sealed=b)
                                                         for p, b in sorted(sealed.items())]))
        self.session.receive({s.partition: s.sealed for s in self._answer(stream, "shares").shares})
        threading.Thread(target=self._expand, name=f"secagg-round-{self.info.round}", daemon=True).start()

    def _expand(self) -> None:
        try:
            self.mask.set_result(self.session.mask_vector())
        except Exception as exc:  # masked_update raises it in turn, so no update is sent
            self.mask.set_exception(exc)

    def masked_update(self, update: Mapping[str, np.ndarray], num_examples: int) -> dict[str, np.ndarray]:
        """Step 3: the update (in the aggregator's tensor order), weighted, quantised and added to the mask."""
        self.vector = self.session.setup.ring.encode(list(update.values()), num_examples, into=self.mask.result())
        self.masked = True
        return {MASKED_TENSOR: self.vector}

    def unmask(self, stream: TaskStream, ask: bool) -> bool:
        """Step 4, as the survivor lists ask; whether we revealed (that ends the round).

        Right after our masked vector the lists come unasked, as the aggregator's answer to it (or a
        refusal); `ask` them of an aggregator that serves the attempt again.
        """
        if ask:
            self._send(stream, unmask=pb.UnmaskQuery())
            survivors = self._answer(stream, "survivors")
        else:
            verdict = stream.verdict()
            if isinstance(verdict, pb.SubmitReply):  # refused: there is nothing of ours to unmask
                return False
            survivors = self._answer(stream, "survivors", verdict)
        self.reveal(stream, survivors)
        return True

    def reveal(self, stream: TaskStream, survivors: pb.Survivors) -> None:
        """One share per neighbour: of its self-mask seed if it survived, of its masking key if it dropped."""
        shares = self.session.reveal(survivors.survived, survivors.dropped)
        self._send(stream, reveal=pb.RevealedShares(shares=[pb.RevealedShare(partition=p, share=b)
                                                            for p, b in sorted(shares.items())]))
        if self.vector is not None:  # delivered: the next attempt's mask may take its memory
            buffers.give_back([self.vector])
            self.vector = None
        log.info("round %d: revealed %d shares for unmasking", self.info.round, len(shares))
