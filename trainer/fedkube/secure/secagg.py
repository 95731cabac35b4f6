"""SecAgg+ (Bell et al. 2020; Bonawitz et al. 2017 on a complete graph), as pure protocol steps.

One attempt of a round, for participants on a k-regular communication graph:

1. advertise: each client makes two fresh X25519 key pairs, c (to encrypt shares) and s (to mask).
2. share: each client draws a self-mask seed b and Shamir-shares b and its s private key t-of-(k+1)
   among its neighbours and itself, each neighbour's share encrypted with AES-GCM under
   HKDF(ECDH(c_i, c_j)). The clients whose shares arrive form U2; a client masks with its
   neighbours in U2.
3. mask: y_i = x_i + PRG(b_i) + sum over neighbours j in U2 of (+/-) PRG(HKDF(ECDH(s_i, s_j))),
   + when i < j and - when i > j, so every pair cancels in the sum. The masked vectors that
   arrive form U3; U2 minus U3 dropped out after sharing.
4. unmask: each surviving client reveals, for itself and every neighbour, exactly one share: of
   b_j when j is in U3, of s_j when j dropped. With t shares each, the aggregator removes the self masks
   of U3 and, from the dropped clients' s keys, the pairwise masks U3 added towards them.

The aggregator's side (`unmask`) only ever sees the sum of masked vectors; there is no
function here that takes one client's masked vector. Every attempt has its own context (job,
round, fresh nonce) bound into every derived key, so no mask is ever used twice.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedkube import buffers
from fedkube.secure import shamir
from fedkube.secure.masks import SEED_BYTES, add_masks
from fedkube.secure.ring import Ring

MASKED_TENSOR = "masked"  # the one tensor a SecAgg+ client sends: its masked vector
KEY_BYTES = 32
NONCE_BYTES = 12
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
_SHARE_HEADER = struct.Struct(">ii")


class ProtocolError(RuntimeError):
    """This attempt cannot go on (too few peers, a bad share, an inconsistent request)."""


def neighbourhoods(participants: Sequence[int], neighbours: int | None, seed: int) -> dict[int, frozenset[int]]:
    """A k-regular graph over the participants (a Harary graph on a seeded random ring order).

    `neighbours` None, or at least n - 1, gives the complete graph (classic SecAgg). An odd k
    with an odd number of participants has no k-regular graph; k + 1 is used then.
    """
    people = sorted(participants)
    n = len(people)
    if neighbours is None or neighbours >= n - 1:
        return {p: frozenset(q for q in people if q != p) for p in people}
    order = [people[i] for i in np.random.default_rng(seed).permutation(n)]
    offsets = set(range(1, neighbours // 2 + 1)) | {-d for d in range(1, neighbours // 2 + 1)}
    if neighbours % 2:
        if n % 2:
            offsets |= {neighbours // 2 + 1, -(neighbours // 2 + 1)}
        else:
            offsets.add(n // 2)
    return {order[i]: frozenset(order[(i + d) % n] for d in offsets) for i in range(n)}


@dataclass(frozen=True)
class RoundSetup:
    """What the aggregator announces for one attempt, identical for every participant."""

    job: str
    round: int
    nonce: str              # fresh per attempt: keys and masks of two attempts never meet
    participants: tuple[int, ...]
    neighbours: int | None
    graph_seed: int
    threshold: int
    ring: Ring
    length: int             # elements of a masked vector: every parameter, then the weight

    @property
    def context(self) -> bytes:
        return f"fedkube secagg+ job={self.job} round={self.round} attempt={self.nonce}".encode()

    def graph(self) -> dict[int, frozenset[int]]:
        return neighbourhoods(self.participants, self.neighbours, self.graph_seed)

    def to_json(self) -> dict:
        return {"job": self.job, "round": self.round, "nonce": self.nonce, "participants": list(self.participants),
                "neighbours": self.neighbours, "graphSeed": self.graph_seed, "threshold": self.threshold,
                "bits": self.ring.bits, "clipRange": self.ring.clip_range, "clients": self.ring.clients,
                "length": self.length}

    @classmethod
    def from_json(cls, doc: Mapping) -> RoundSetup:
        return cls(doc["job"], int(doc["round"]), doc["nonce"], tuple(doc["participants"]), doc["neighbours"],
                   int(doc["graphSeed"]), int(doc["threshold"]),
                   Ring(int(doc["bits"]), float(doc["clipRange"]), int(doc["clients"])), int(doc["length"]))

    def dumps(self) -> str:
        return json.dumps(self.to_json())


def _derive(secret: bytes, purpose: bytes, context: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=b"fedkube/secagg+/" + purpose + b"/" + context).derive(
        secret)


def pairwise_seed(private: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    return _derive(private.exchange(X25519PublicKey.from_public_bytes(peer_public)), b"mask", context)


def _x(partition: int) -> int:
    """The Shamir point of the share a partition holds (never 0, where the secret sits)."""
    return partition + 1


def _pair_sign(me: int, peer: int) -> int:
    return 1 if me < peer else -1


def _share_aad(context: bytes, sender: int, receiver: int) -> bytes:
    return context + _SHARE_HEADER.pack(sender, receiver)


@dataclass
class ClientSession:
    """One client's side of one attempt; its secrets live only here and die with the attempt."""

    setup: RoundSetup
    me: int
    c_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    s_key: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)
    b_seed: bytes = field(default_factory=lambda: os.urandom(SEED_BYTES))
    peer_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    held: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # peer -> (b share, s share) it gave us
    answer: tuple[frozenset[int], frozenset[int], dict[int, bytes]] | None = None  # what reveal() gave out

    def __post_init__(self) -> None:
        if self.me not in self.setup.participants:
            raise ProtocolError(f"partition {self.me} is not a participant of this attempt")
        self.neighbours = self.setup.graph()[self.me]
        self._ciphers: dict[int, AESGCM] = {}

    def advert(self) -> tuple[bytes, bytes]:
        """Step 1: the public keys (c, s) to broadcast to the neighbours."""
        return self.c_key.public_key().public_bytes(*_RAW), self.s_key.public_key().public_bytes(*_RAW)

    def _share_key(self, peer: int) -> AESGCM:
        """The pair's share cipher: it seals our shares to `peer` and opens its shares to us (one ECDH)."""
        if peer not in self._ciphers:
            shared = self.c_key.exchange(X25519PublicKey.from_public_bytes(self.peer_keys[peer][0]))
            self._ciphers[peer] = AESGCM(_derive(shared, b"shares", self.setup.context))
        return self._ciphers[peer]

    def share(self, keys: Mapping[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
        """Step 2: encrypted shares of b and of s's private key, one ciphertext per advertised neighbour.

        We keep one share of each for ourselves, so t survivors are enough to rebuild our self mask.
        """
        self.peer_keys = {p: (bytes(c), bytes(s)) for p, (c, s) in keys.items() if p in self.neighbours}
        peers = sorted(self.peer_keys)
        if len(peers) + 1 < self.setup.threshold:
            raise ProtocolError(f"only {len(peers)} neighbours advertised keys; threshold is {self.setup.threshold}")
        secret_key = self.s_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())
        holders = [*peers, self.me]
        b_shares = shamir.split(self.b_seed, self.setup.threshold, map(_x, holders))
        s_shares = shamir.split(secret_key, self.setup.threshold, map(_x, holders))
        self.held[self.me] = (b_shares[_x(self.me)], s_shares[_x(self.me)])
        out = {}
        for p in peers:
            nonce = os.urandom(NONCE_BYTES)
            sealed = self._share_key(p).encrypt(nonce, b_shares[_x(p)] + s_shares[_x(p)],
                                                _share_aad(self.setup.context, self.me, p))
            out[p] = nonce + sealed
        return out

    def receive(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Step 2, inbound: the shares neighbours sent us; their senders are who we mask with."""
        if self.me in ciphertexts:
            raise ProtocolError(f"a share claiming to come from ourselves (partition {self.me})")
        for sender, blob in ciphertexts.items():
            if sender not in self.peer_keys:
                raise ProtocolError(f"a share from partition {sender}, which is not an advertised neighbour")
            try:
                plain = self._share_key(sender).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                                        _share_aad(self.setup.context, sender, self.me))
            except InvalidTag as exc:
                raise ProtocolError(f"the share from partition {sender} does not authenticate") from exc
            size = shamir.SHARE_BYTES
            self.held[sender] = (plain[:size], plain[size:2 * size])
        if len(self.held) < self.setup.threshold:
            raise ProtocolError(f"only {len(self.held) - 1} neighbours shared keys; threshold is "
                                f"{self.setup.threshold}")

    def mask(self, encoded: np.ndarray) -> np.ndarray:
        """Step 3, in place: self mask plus one pairwise mask per neighbour that shared with us."""
        masks = [(self.b_seed, 1)] + [(pairwise_seed(self.s_key, self.peer_keys[peer][1], self.setup.context),
                                       _pair_sign(self.me, peer)) for peer in sorted(set(self.held) - {self.me})]
        return self.setup.ring.reduce(add_masks(encoded, masks))

    def mask_vector(self) -> np.ndarray:
        """Step 3 before the update exists: the total mask, to which `Ring.encode` adds the update.

        It depends only on this attempt's secrets and on who shared, so a client computes it
        while it trains, into a delivered vector of an earlier attempt when one is free (fedkube.buffers).
        """
        return self.mask(buffers.zeros((self.setup.length,), self.setup.ring.dtype))

    def reveal(self, survivors: Collection[int], dropped: Collection[int]) -> dict[int, bytes]:
        """Step 4: b shares of survivors (us included), s-key shares of dropped neighbours; never both for one.

        Asked again with the same lists (an aggregator restarted mid-unmasking), the same shares
        come back: that tells the aggregator nothing it was not told before. Other lists are refused.
        """
        survivors, dropped = frozenset(survivors), frozenset(dropped)
        if self.answer is not None:
            if self.answer[:2] != (survivors, dropped):
                raise ProtocolError("this attempt's shares were already revealed for other survivor lists")
            return self.answer[2]
        if survivors & dropped:
            raise ProtocolError(f"partitions {sorted(survivors & dropped)} are claimed both survived and dropped")
        if self.me not in survivors:
            raise ProtocolError("asked to unmask a round our own masked vector is not part of")
        if len(survivors) < self.setup.threshold:
            raise ProtocolError(f"only {len(survivors)} survivors; below threshold {self.setup.threshold}, "
                                "revealing would expose individual updates")
        shares = {p: pair[0] if p in survivors else pair[1]
                  for p, pair in self.held.items() if p in survivors | dropped}
        self.answer = (survivors, dropped, shares)
        return shares


def unmask(total: np.ndarray, setup: RoundSetup, mask_keys: Mapping[int, bytes], shared: Collection[int],
           survivors: Collection[int], revealed: Mapping[int, Mapping[int, bytes]]) -> np.ndarray:
    """In place: the sum of the survivors' inputs, from the sum of their masked vectors.

    `mask_keys`: each participant's advertised s public key; `shared`: U2, the clients whose
    shares were delivered; `survivors`: U3, whose masked vectors are in `total`; `revealed`:
    revealer -> {peer: share}. Raises ProtocolError when some secret has fewer than t shares.
    """
    graph = setup.graph()
    survivors, shared = set(survivors), set(shared)
    dropped = shared - survivors
    context, t = setup.context, setup.threshold

    def recover(peer: int, length: int) -> bytes:
        points = {_x(holder): shares[peer] for holder, shares in revealed.items()
                  if peer in shares and (holder in graph[peer] or holder == peer)}
        if len(points) < t:
            raise ProtocolError(f"partition {peer}: {len(points)} shares revealed, {t} needed")
        return shamir.combine(points, t, length)

    masks = [(recover(j, SEED_BYTES), -1) for j in sorted(survivors)]
    for j in sorted(dropped):
        key = X25519PrivateKey.from_private_bytes(recover(j, KEY_BYTES))
        if key.public_key().public_bytes(*_RAW) != mask_keys[j]:
            raise ProtocolError(f"partition {j}: the revealed shares do not rebuild its advertised key")
        # each survivor k added sign(k, j) * PRG(s_kj) for the dropped j; take it back out.
        masks += [(pairwise_seed(key, mask_keys[k], context), -_pair_sign(k, j)) for k in sorted(graph[j] & survivors)]
    return setup.ring.reduce(add_masks(total, masks))
