"""SecAgg+ rounds on the aggregator: key routing, the masked sum, unmasking, retries.

The aggregator relays public keys and sealed shares it cannot open, folds masked vectors into
one running sum in the ring (`MaskedSum`: chunk by chunk, so no client's vector is ever held
whole, and none is ever unmasked alone), and removes the masks from that sum with the shares
the survivors reveal. An attempt that cannot finish (fewer survivors or revealed shares than the
threshold) is abandoned and the round retried with a fresh nonce, fresh keys and a fresh graph:
masks are never reused. Each step waits at most the round timeout for the participants still
expected, and moves on as soon as all of them (or, for unmasking, enough of them) answered.

Once every masked vector is in, the masked sum and the attempt's public record go to the
checkpoint store. An aggregator restarted before the round's checkpoint finishes that attempt
from the unmasking step instead of training the round again: the masks can only be removed with
the shares the surviving clients hold in memory for that very attempt (its nonce), so each of them
is served the round again and reveals the same shares for the same survivor lists, which tells
the aggregator nothing new. Clients that restarted too lost their shares; without `threshold` of
them within the round timeout, the record is dropped and the round starts afresh with new keys.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedkube.aggregator.accumulate import WeightedSum, check_specs
from fedkube.aggregator.coordinator import Coordinator, RoundOutcome, RoundState
from fedkube.plan import AggregatorPlan
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol.tensors import TensorSpec, specs_of
from fedkube.secure import DEFAULT_CLIP_RANGE, default_bits, neighbourhood, safe_min_threshold
from fedkube.secure.ring import Ring
from fedkube.secure.secagg import MASKED_TENSOR, ProtocolError, RoundSetup, unmask
from fedkube.stores import Store
from fedkube.strategies import Strategy, Weights

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
STEPS = ("advertise", "share", "mask", "unmask", "done")  # an attempt's steps, in order


class MaskedSum:
    """The running sum of masked vectors in the ring; the only thing about updates the aggregator holds."""

    def __init__(self, ring: Ring, length: int) -> None:
        self.ring = ring
        self.specs = [TensorSpec(MASKED_TENSOR, ring.dtype.name, (length,))]
        self.total = np.zeros(length, dtype=ring.dtype)
        self.count = 0

    def begin(self, weight: float) -> MaskedFold:
        """`weight` is ignored: the real one travels masked, inside the vector."""
        return MaskedFold(self)


class MaskedFold:
    """One masked vector entering the sum; chunks are kept until commit() so abort() can take them out."""

    def __init__(self, target: MaskedSum) -> None:
        self.target = target
        self._folded: list[tuple[int, np.ndarray]] = []

    def check_specs(self, specs: list[TensorSpec]) -> None:
        check_specs(specs, self.target.specs)

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None:
        self.target.total[start:start + values.size] += values  # wraps mod 2^(dtype bits), as the ring wants
        self._folded.append((start, values))

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None:
        raise ValueError("masked vectors are dense")

    def commit(self) -> None:
        self.target.count += 1
        self._folded.clear()

    def abort(self) -> None:
        for start, values in reversed(self._folded):
            self.target.total[start:start + values.size] -= values
        self._folded.clear()


@dataclass
class Attempt:
    """The rendezvous of one attempt: what arrived at each step, and which step is open."""

    setup: RoundSetup
    tickets: dict[int, str]
    step: str = "advertise"         # advertise -> share -> mask -> unmask -> done
    failure: str | None = None
    adverts: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    outbox: dict[int, dict[int, bytes]] = field(default_factory=dict)       # sender -> receiver -> sealed
    survivors: frozenset[int] = frozenset()
    dropped: frozenset[int] = frozenset()
    revealed: dict[int, dict[int, bytes]] = field(default_factory=dict)     # revealer -> peer -> share
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)  # an arrival: the round loop waits on it
    left: dict[str, asyncio.Event] = field(default_factory=lambda: {s: asyncio.Event() for s in STEPS})

    def __post_init__(self) -> None:
        self.graph = self.setup.graph()
        self.marks: list[tuple[str, float]] = [("", time.monotonic())]

    def mark(self, step: str) -> None:
        """`step` ended now (for the round's log line: where a slow round spent its time)."""
        self.marks.append((step, time.monotonic()))

    def timeline(self) -> str:
        return " ".join(f"{step}={b - a:.3f}" for (_, a), (step, b) in itertools.pairwise(self.marks))

    async def move_to(self, step: str, failure: str | None = None) -> None:
        self.step, self.failure = step, failure
        for earlier in STEPS[:STEPS.index(step)]:
            self.left[earlier].set()
        await self._notify()

    async def until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait until `done()` or `timeout` seconds, whichever first."""
        async def wait() -> None:
            async with self.changed:
                await self.changed.wait_for(done)
        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            pass

    async def _after(self, step: str) -> None:
        """Wait until the attempt has left `step`. Participants wait on an event of the step's own, so
        each is woken once; on `changed` every arrival would wake them all, n^2 wake-ups a step."""
        await self.left[step].wait()
        if self.failure is not None:
            raise ProtocolError(f"round {self.setup.round} attempt abandoned: {self.failure}")

    def _expect(self, step: str, partition: int) -> None:
        if self.failure is not None:
            raise ProtocolError(f"round {self.setup.round} attempt abandoned: {self.failure}")
        if self.step != step:
            raise ProtocolError(f"partition {partition}: step {step!r} is not open (the attempt is at {self.step!r})")

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # --- the four client steps ---------------------------------------------------------------
    async def advertise(self, partition: int, keys: tuple[bytes, bytes]) -> dict[int, tuple[bytes, bytes]]:
        self._expect("advertise", partition)
        self.adverts[partition] = keys
        await self._notify()
        await self._after("advertise")
        return {p: k for p, k in self.adverts.items() if p in self.graph[partition]}

    async def share(self, partition: int, sealed: dict[int, bytes]) -> dict[int, bytes]:
        self._expect("share", partition)
        if partition not in self.adverts:
            raise ProtocolError(f"partition {partition} shares keys it never advertised")
        strangers = set(sealed) - (self.graph[partition] & set(self.adverts))
        if strangers:
            raise ProtocolError(f"partition {partition} addressed shares to non-neighbours {sorted(strangers)}")
        self.outbox[partition] = sealed
        await self._notify()
        await self._after("share")
        return {sender: box[partition] for sender, box in self.outbox.items() if partition in box}

    async def unmask_query(self, partition: int) -> tuple[frozenset[int], frozenset[int]]:
        if self.failure is None and self.step in ("advertise", "share", "mask"):
            await self._after("mask")
        if self.failure is not None or self.step != "done":  # done: unmasked already, a late reveal is moot
            self._expect("unmask", partition)
        if partition not in self.survivors:
            raise ProtocolError(f"partition {partition}'s masked vector is not in this round's sum")
        return self.survivors, self.dropped

    async def reveal(self, partition: int, shares: dict[int, bytes]) -> None:
        if self.failure is None and self.step == "done":
            return  # the sum was unmasked with the shares that came first
        self._expect("unmask", partition)
        if partition not in self.survivors or partition in self.revealed:
            raise ProtocolError(f"partition {partition} may not reveal (not a survivor, or already did)")
        self.revealed[partition] = shares
        await self._notify()

    def can_unmask(self) -> bool:
        """Every secret to rebuild has `threshold` revealed shares from its neighbours."""
        t = self.setup.threshold
        return all(sum(1 for h, shares in self.revealed.items() if p in shares and (h in self.graph[p] or h == p))
                   >= t for p in self.survivors | self.dropped)


def plain_sum(strategy: Strategy, specs: list[TensorSpec]) -> WeightedSum:
    """The strategy's round accumulator, which the unmasked sum fills in: a linear one only."""
    plain = strategy.new_round(specs)
    if not isinstance(plain, WeightedSum):
        raise ValueError(f"strategy {strategy.name!r} needs individual updates; SecAgg+ only gives their sum")
    return plain


def masked_length(plain: WeightedSum) -> int:
    """Elements of a masked vector: every parameter, then the weight."""
    return sum(s.nbytes // np.dtype(s.dtype).itemsize for s in plain.specs) + 1


def round_ring(plan: AggregatorPlan) -> Ring:
    secure = plan.secure_aggregation
    return Ring(secure.bits or default_bits(plan.num_partitions), secure.clip_range or DEFAULT_CLIP_RANGE,
                plan.num_partitions)


def round_neighbours(plan: AggregatorPlan) -> int:
    return neighbourhood(plan.secure_aggregation.neighbours, plan.clients_per_round)


def round_threshold(plan: AggregatorPlan) -> int:
    threshold = plan.secure_aggregation.threshold
    return threshold if threshold is not None else safe_min_threshold(round_neighbours(plan))


class SecAggRounds:
    """Runs SecAgg+ rounds through the coordinator, and answers the clients' SecAgg+ steps."""

    def __init__(self, plan: AggregatorPlan, coordinator: Coordinator, store: Store | None = None) -> None:
        self.plan, self.coordinator, self.store = plan, coordinator, store
        self.ring = round_ring(plan)
        self.neighbours, self.threshold = round_neighbours(plan), round_threshold(plan)
        self.attempt: Attempt | None = None
        self.abandoned_attempts = 0
        self.first_round = True  # only the round an aggregator starts with can be one an earlier one left

    # --- the gRPC side: thin translation ------------------------------------------------------
    async def handle(self, partition: int, request: pb.SecAggRequest) -> pb.SecAggReply | None:
        """`partition`'s step (its session's certificate names it); the answer, None for a reveal."""
        try:
            return await self._step(partition, request)
        except ProtocolError as exc:
            if request.WhichOneof("step") == "reveal":  # unanswered: the unmasking goes on with the others'
                log.warning("round %d: partition %d's shares refused: %s", request.round, partition, exc)
                return None
            return pb.SecAggReply(abandoned=str(exc))

    async def _step(self, p: int, request: pb.SecAggRequest) -> pb.SecAggReply | None:
        attempt = self.attempt
        if attempt is None or attempt.setup.round != request.round or attempt.tickets.get(p) != request.ticket:
            raise ProtocolError(f"partition {p}: no open SecAgg+ attempt for round {request.round} with this ticket")
        step = request.WhichOneof("step")
        if step == "advertise":
            keys = await attempt.advertise(p, (request.advertise.cipher_key, request.advertise.mask_key))
            return pb.SecAggReply(keys=pb.KeyList(peers=[pb.PeerKeys(partition=q, cipher_key=c, mask_key=m)
                                                         for q, (c, m) in sorted(keys.items())]))
        if step == "share":
            inbox = await attempt.share(p, {s.partition: s.sealed for s in request.share.shares})
            return pb.SecAggReply(shares=pb.SealedShares(shares=[pb.SealedShare(partition=q, sealed=b)
                                                                 for q, b in sorted(inbox.items())]))
        if step == "unmask":
            survived, dropped = await attempt.unmask_query(p)
            return pb.SecAggReply(survivors=pb.Survivors(survived=sorted(survived), dropped=sorted(dropped)))
        if step == "reveal":
            await attempt.reveal(p, {s.partition: s.share for s in request.reveal.shares})
            return None
        raise ProtocolError(f"partition {p}: a SecAgg request without a step")

    # --- the round loop side ------------------------------------------------------------------
    async def run_round(self, number: int, weights: Weights, specs: list[TensorSpec], strategy: Strategy,
                        config_for: Callable[[int], dict[str, Any]] = lambda p: {}) -> RoundOutcome:
        """Up to MAX_ATTEMPTS attempts, each with fresh keys; the last outcome if none completes."""
        started = time.monotonic()
        if self.first_round:
            self.first_round = False
            resumed = await self._resume(number, weights, specs, strategy, config_for, started)
            if resumed is not None:
                return resumed
        outcome = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            outcome, failure = await self._attempt(number, weights, specs, strategy, config_for, started)
            if failure is None:
                return outcome
            self.abandoned_attempts += 1
            log.warning("round %d: SecAgg+ attempt %d of %d abandoned: %s", number, attempt, MAX_ATTEMPTS, failure)
            if len(self.coordinator.live) < self.threshold + 1:
                break  # no fresh attempt can gather enough participants now
        assert outcome is not None
        return outcome

    async def _attempt(self, number: int, weights: Weights, specs: list[TensorSpec], strategy: Strategy,
                       config_for: Callable[[int], dict[str, Any]], started: float) -> tuple[RoundOutcome, str | None]:
        c, timeout = self.coordinator, self.plan.round_timeout_seconds
        selected = c.sample(number)
        plain = plain_sum(strategy, specs)
        masked = MaskedSum(self.ring, masked_length(plain))
        setup = RoundSetup(self.plan.job, number, secrets.token_hex(8), tuple(selected),
                           self.neighbours, secrets.randbits(31), self.threshold, self.ring,
                           masked.total.size)
        sent = strategy.broadcast(weights)
        state = RoundState(number, selected, sent, specs_of(sent), masked, {p: secrets.token_hex(8) for p in selected},
                           {p: {**config_for(p), "secagg": setup.to_json()} for p in selected})
        attempt = self.attempt = Attempt(setup, state.tickets)
        c.round = state
        await c._notify()

        def outcome(answered: set[int], failure: str | None) -> tuple[RoundOutcome, str | None]:
            """`answered`: whose masked vectors arrived; they stay live even when the attempt fails."""
            state.closed = True
            for fold in state.inflight.values():
                fold.abort()
            gone = sorted(set(selected) - answered)
            for p in gone:
                if not c.waiting[p]:
                    c.live.discard(p)
            c.dropped_total += len(gone)
            reported = [] if failure else sorted(answered)
            return RoundOutcome(number, selected, reported, gone, dict(state.rejected), plain,
                                state.train_metrics if not failure else [], state.bytes_in, state.bytes_out,
                                time.monotonic() - started), failure

        if len(selected) <= self.threshold:
            await attempt.move_to("done", "too few clients")
            return outcome(set(selected), f"{len(selected)} clients sampled; threshold {self.threshold} needs more")
        await attempt.until(lambda: set(attempt.adverts) >= set(selected), timeout)
        attempt.mark("advertise")
        await attempt.move_to("share")
        await attempt.until(lambda: set(attempt.outbox) >= set(attempt.adverts), timeout)
        attempt.mark("share")
        shared = frozenset(attempt.outbox)
        await attempt.move_to("mask")
        state.selected = sorted(shared)  # only those who shared may send a masked vector
        for p in set(selected) - shared:
            state.tickets.pop(p, None)
        c._maybe_answered(state)
        await c._notify()
        try:
            await asyncio.wait_for(state.answered.wait(), timeout)
        except TimeoutError:
            pass
        state.closed = True
        for fold in state.inflight.values():  # a straggler's partial vector must not stay in the sum
            fold.abort()
        attempt.mark("mask")
        survivors = frozenset(state.reported)
        log.info("round %d: %d of %d clients advertised keys, %d shared them, %d sent masked vectors", number,
                 len(attempt.adverts), len(selected), len(shared), len(survivors))
        if len(survivors) < max(self.threshold, self.plan.min_available):
            await attempt.move_to("done", "too few survivors")
            return outcome(set(survivors), f"{len(survivors)} masked vectors arrived; threshold {self.threshold}, "
                                           f"spec.clients.minAvailable {self.plan.min_available}")
        # Written while the survivors reveal and the masks come off (its fsyncs cost more than a round
        # trip), from a copy of the masked sum taken now: the record is public, and a crash before it
        # is on disk only means the round starts afresh.
        record = asyncio.ensure_future(asyncio.to_thread(self._persist, self._record(attempt, shared, survivors,
                                                                                      masked)))
        attempt.survivors, attempt.dropped = survivors, shared - survivors
        await attempt.move_to("unmask")
        return outcome(set(survivors), await self._unmask(attempt, masked, plain, shared, record))

    async def _unmask(self, attempt: Attempt, masked: MaskedSum, plain: WeightedSum, shared: frozenset[int],
                      record: asyncio.Future[list[str]] | list[str]) -> str | None:
        """Wait for the survivors' shares, remove the masks and decode the sum into `plain`; why not, if not.

        `record`: the keys of the attempt's masked record, or their write still under way (awaited
        only to drop the record once the sum is unmasked).
        """
        await attempt.until(attempt.can_unmask, self.plan.round_timeout_seconds)
        attempt.mark("reveal")
        setup, survivors = attempt.setup, attempt.survivors
        try:  # in a thread: removing the masks is model-sized work the event loop should not wait on
            await asyncio.to_thread(unmask, masked.total, setup, {p: k[1] for p, k in attempt.adverts.items()},
                                    shared, survivors, attempt.revealed)
        except ProtocolError as exc:
            await attempt.move_to("done", str(exc))
            return str(exc)
        finally:  # unmasked, or never to be: a fresh attempt has other keys
            self._forget(record if isinstance(record, list) else await record)
        attempt.mark("unmask")
        await attempt.move_to("done")
        weight = self.ring.decode_into(masked.total, plain.sums)
        plain.total_weight, plain.count = float(weight), len(survivors)
        attempt.mark("decode")
        log.info("round %d: SecAgg+ unmasked the sum of %d updates (%d dropped after sharing, %d revealers); "
                 "seconds per step: %s", setup.round, len(survivors), len(shared - survivors), len(attempt.revealed),
                 attempt.timeline())
        return None

    async def _resume(self, number: int, weights: Weights, specs: list[TensorSpec], strategy: Strategy,
                      config_for: Callable[[int], dict[str, Any]], started: float) -> RoundOutcome | None:
        """Round `number` finished from the masked sum an earlier aggregator left, or None (see the module)."""
        found = self._load(number)
        if found is None:
            return None
        keys, doc, total = found
        setup = RoundSetup.from_json(doc["setup"])
        shared, survivors = frozenset(doc["shared"]), frozenset(doc["survivors"])
        tickets = {int(p): t for p, t in doc["tickets"].items()}
        plain = plain_sum(strategy, specs)
        fits = total.size == setup.length == masked_length(plain)
        if setup.ring != self.ring or total.dtype != self.ring.dtype or not fits:
            log.warning("round %d: the masked record %s does not fit this job's model and ring; starting the "
                        "round afresh", number, keys[0])
            self._forget(keys)
            return None
        masked = MaskedSum(self.ring, total.size)
        masked.total[:] = total
        sent = strategy.broadcast(weights)
        state = RoundState(number, sorted(survivors), sent, specs_of(sent), masked, tickets,
                           {p: {**config_for(p), "secagg": setup.to_json()} for p in survivors})
        attempt = self.attempt = Attempt(setup, tickets, adverts={int(p): (b"", bytes.fromhex(k))
                                                                  for p, k in doc["maskKeys"].items()})
        attempt.survivors, attempt.dropped = survivors, shared - survivors
        await attempt.move_to("unmask")
        c = self.coordinator
        c.round = state
        await c._notify()
        log.info("round %d: resuming SecAgg+ attempt %s at the unmasking step, from %s", number, setup.nonce, keys[0])
        failure = await self._unmask(attempt, masked, plain, shared, keys)
        state.closed = True
        if failure is not None:
            log.warning("round %d: the resumed attempt cannot be unmasked (%s); the round starts again with "
                        "fresh keys", number, failure)
            return None
        return RoundOutcome(number, sorted(survivors), sorted(survivors), sorted(shared - survivors), {}, plain, [],
                            0, 0, time.monotonic() - started)

    def _record(self, attempt: Attempt, shared: frozenset[int], survivors: frozenset[int],
                masked: MaskedSum) -> dict[str, bytes]:
        """The masked sum and the public round record, as the files that hold them under the round: enough
        to finish unmasking after a restart, and nothing more (masked vectors and public keys reveal no update).
        """
        if self.store is None:
            return {}
        setup = attempt.setup
        prefix = f"secagg/round-{setup.round:06d}-{setup.nonce}"
        record = {"setup": setup.to_json(), "shared": sorted(shared), "survivors": sorted(survivors),
                  "maskKeys": {str(p): k[1].hex() for p, k in sorted(attempt.adverts.items())},
                  "tickets": {str(p): attempt.tickets[p] for p in sorted(survivors)}}
        buffer = io.BytesIO()
        np.save(buffer, masked.total)
        return {f"{prefix}/masked-sum.npy": buffer.getvalue(), f"{prefix}/round.json": json.dumps(record).encode()}

    def _persist(self, files: dict[str, bytes]) -> list[str]:
        """Write the record's files, the round record last (it marks the record complete); their keys."""
        assert self.store is not None or not files
        for key, data in files.items():
            self.store.put(key, data)
        return list(files)

    def _load(self, number: int) -> tuple[list[str], dict, np.ndarray] | None:
        """The masked record of round `number` that an earlier aggregator left, if any.

        There is at most one per round (an attempt's record goes when it is unmasked or abandoned).
        Records of other rounds are dropped: a later round's was masked over weights this restart
        trains again, so no client still holds shares for it.
        """
        if self.store is None:
            return None
        found, listed = None, self.store.list("secagg/")
        for prefix in sorted({key.rsplit("/", 1)[0] for key in listed}):
            keys = [f"{prefix}/masked-sum.npy", f"{prefix}/round.json"]
            complete = all(k in listed for k in keys)  # the record is written last
            if complete and found is None and prefix.startswith(f"secagg/round-{number:06d}-"):
                found = keys, json.loads(self.store.get(keys[1])), np.load(io.BytesIO(self.store.get(keys[0])))
            else:
                self._forget(keys)
        return found

    def _forget(self, keys: list[str]) -> None:
        """Drop a masked record: its round was unmasked (the checkpoint supersedes it), or never will be."""
        for key in keys:
            assert self.store is not None
            self.store.delete(key)
