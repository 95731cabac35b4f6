"""A client's part in one SecAgg+ attempt, over the aggregator's SecAgg call.

Keys are agreed, shares exchanged and the total mask expanded in a background thread while the
client trains: none of it depends on the update, and the two exchanges are round trips that
wait for every other participant, so training hides both their latency and the mask's cost.
The masked vector (the update encoded onto that mask) replaces the plain update in
SubmitUpdate; after it, the client answers the unmasking query with exactly one share per
neighbour. The client keeps its last attempt until the next round, so that an aggregator
restarted mid-unmasking, serving that attempt again, gets the same shares once more.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import grpc
import numpy as np

from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.secure.secagg import MASKED_TENSOR, ClientSession, RoundSetup

log = logging.getLogger(__name__)


class SecAggParticipant:
    def __init__(self, stub: pb_grpc.AggregatorStub, info: pb.RoundInfo, partition: int,
                 config: Mapping[str, Any]) -> None:
        self.stub, self.info, self.partition = stub, info, partition
        self.session = ClientSession(RoundSetup.from_json(config), partition)
        self.mask: Future[np.ndarray] = Future()
        self.masked = False  # our masked vector was made: from now on we only ever reveal

    def start(self) -> None:
        """Steps 1 and 2 and the total mask, in the background (see the module)."""
        threading.Thread(target=self._prepare, name=f"secagg-round-{self.info.round}", daemon=True).start()

    def _prepare(self) -> None:
        try:
            self.exchange_keys()
            self.mask.set_result(self.session.mask_vector())
        except Exception as exc:  # masked_update raises it in turn, so no update is sent
            log.warning("round %d: SecAgg+ attempt left before masking: %s", self.info.round,
                        exc.details() if isinstance(exc, grpc.RpcError) else exc)
            self.mask.set_exception(exc)

    def serves_again(self, info: pb.RoundInfo) -> bool:
        """Whether `info` is our attempt served again: a restarted aggregator finishing its unmasking."""
        setup = json.loads(info.config_json or "{}").get("secagg") or {}
        return info.round == self.info.round and setup.get("nonce") == self.session.setup.nonce

    def _call(self, **step: Any) -> pb.SecAggReply:
        return self.stub.SecAgg(pb.SecAggRequest(partition=self.partition, round=self.info.round,
                                                 ticket=self.info.ticket, **step))

    def exchange_keys(self) -> None:
        """Steps 1 and 2: advertise our keys, send sealed shares, keep the ones sent to us."""
        c_key, s_key = self.session.advert()
        reply = self._call(advertise=pb.PeerKeys(partition=self.partition, cipher_key=c_key, mask_key=s_key))
        keys = {k.partition: (k.cipher_key, k.mask_key) for k in reply.keys.peers}
        sealed = self.session.share(keys)
        reply = self._call(share=pb.SealedShares(shares=[pb.SealedShare(partition=p, sealed=b)
                                                         for p, b in sorted(sealed.items())]))
        self.session.receive({s.partition: s.sealed for s in reply.shares.shares})

    def masked_update(self, update: Mapping[str, np.ndarray], num_examples: int) -> dict[str, np.ndarray]:
        """Step 3: the update (in the aggregator's tensor order), weighted, quantised and added to the mask."""
        masked = self.session.setup.ring.encode(list(update.values()), num_examples, into=self.mask.result())
        self.masked = True
        return {MASKED_TENSOR: masked}

    def unmask(self) -> None:
        """Step 4: reveal one share per neighbour, as the survivor lists ask."""
        reply = self._call(unmask=pb.UnmaskQuery())
        shares = self.session.reveal(reply.survivors.survived, reply.survivors.dropped)
        self._call(reveal=pb.RevealedShares(shares=[pb.RevealedShare(partition=p, share=b)
                                                    for p, b in sorted(shares.items())]))
        log.info("round %d: revealed %d shares for unmasking", self.info.round, len(shares))
