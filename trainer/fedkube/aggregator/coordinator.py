"""Who takes part in which round: the client registry, sampling, and collecting one round.

All of it runs on the aggregator's event loop, so state changes between awaits are atomic and
need no locks. The gRPC servicer only translates calls into `next_task` / `submit` here; the
aggregator's main loop drives rounds with `wait_for_quorum` and `run_round`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedkube.aggregator.accumulate import UpdateFold, UpdateRejected
from fedkube.aggregator.stack import StackFold
from fedkube.compression import UpdateDecoder, build_codec
from fedkube.compression.base import WireDecoder, reads_own_wire
from fedkube.plan import AggregatorPlan
from fedkube.protocol.tensors import ChunkCursor, TensorSpec, inline_payload, specs_of
from fedkube.strategies import Accumulator, Strategy, Weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEnd:
    succeeded: bool
    message: str
    reason: str = ""  # why a job ended early, e.g. PrivacyBudgetExhausted


@dataclass
class RoundState:
    """One round in progress: who was picked, what came back."""

    number: int
    selected: list[int]
    weights: Weights
    specs: list[TensorSpec]
    accumulator: Accumulator
    tickets: dict[int, str]
    config: dict[int, dict[str, Any]] = field(default_factory=dict)  # partition -> its round config
    served: dict[int, str] = field(default_factory=dict)      # partition -> session that fetched it
    reported: set[int] = field(default_factory=set)
    rejected: dict[int, str] = field(default_factory=dict)    # partition -> reason
    inflight: dict[int, UpdateFold | StackFold] = field(default_factory=dict)
    train_metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    client_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    accepted_wire_bytes: int = 0    # bytes of the updates that were aggregated, as sent
    accepted_dense_bytes: int = 0   # the same updates at full precision, for the compression ratio
    closed: bool = False
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    # The RoundInfo every client of the round gets, serialised once: with the weights inline (True) or not.
    shared_info: dict[bool, bytes] = field(default_factory=dict)

    def pending(self) -> set[int]:
        return set(self.selected) - self.reported - set(self.rejected)

    def is_pending(self, partition: int) -> bool:
        """`partition in pending()` without building the set: asked for every client, every round."""
        return partition not in self.reported and partition not in self.rejected and partition in self.selected

    @functools.cached_property
    def inline(self) -> bytes | None:
        """The weights as one inline payload (None: too large), encoded once for every client."""
        return inline_payload(self.weights[s.name] for s in self.specs)


@dataclass(frozen=True)
class RoundOutcome:
    number: int
    selected: list[int]
    reported: list[int]
    dropped: list[int]
    rejected: dict[int, str]
    accumulator: Accumulator
    train_metrics: list[tuple[int, dict[str, float]]]
    bytes_in: int
    bytes_out: int
    seconds: float
    compression_ratio: float | None = None
    client_metrics: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def num_examples(self) -> int:
        return sum(n for n, _ in self.train_metrics)


class Coordinator:
    def __init__(self, plan: AggregatorPlan) -> None:
        self.plan = plan
        self.sessions: dict[int, str] = {}        # partition -> latest session
        self.live: set[int] = set()
        self.waiting: Counter[int] = Counter()    # partitions blocked in next_task now
        self.round: RoundState | None = None
        self.end: JobEnd | None = None
        self.told: set[int] = set()               # partitions that have received the JobEnd
        self.rejected_total: Counter[str] = Counter()
        self.dropped_total = 0
        self._changed = asyncio.Condition()      # the quorum waiter: the live clients changed
        self._alarms: dict[int, asyncio.Event] = {}  # partition -> the alarm its idle next_task calls sleep on
        self._stream_slots = asyncio.Semaphore(plan.max_concurrent_streams)
        # Run once, right after the next clients are woken: work no client waits for overlaps theirs.
        self.on_wake: Callable[[], None] | None = None
        self.codec = build_codec(plan.compression)

    async def _notify(self, partitions: Iterable[int] | None = None) -> None:
        """Wake the quorum waiter and the idle clients of `partitions` (None: every client).

        A round wakes only the clients it sampled: with 1,000 joined and 100 sampled, a round
        start costs 100 wake-ups, not a wake-up of every idle client each time one comes back.
        """
        async with self._changed:
            self._changed.notify_all()
        for p in list(self._alarms) if partitions is None else partitions:
            if (alarm := self._alarms.pop(p, None)) is not None:
                alarm.set()
        if self.on_wake is not None:  # queued after the wake-ups: the woken clients' messages go out first
            asyncio.get_running_loop().call_soon(self.on_wake)
            self.on_wake = None

    # --- called by the servicer -------------------------------------------------------------
    async def join(self, partition: int) -> str:
        if not 0 <= partition < self.plan.num_partitions:
            raise ValueError(f"partition {partition} does not exist (the job has {self.plan.num_partitions})")
        session = secrets.token_hex(8)
        self.sessions[partition] = session
        self.live.add(partition)
        log.info("client joined", extra={"partition": partition})
        await self._notify([partition])
        return session

    def _task_for(self, partition: int, session: str) -> RoundState | None:
        state = self.round
        if state is None or state.closed or not state.is_pending(partition):
            return None
        return state if state.served.get(partition) != session else None

    async def next_task(self, partition: int, session: str) -> RoundState | JobEnd:
        """Wait until this client has work in the current round, or the job is over."""
        if self.sessions.get(partition) != session:
            raise ValueError(f"partition {partition}: unknown or superseded session, join again")
        self.waiting[partition] += 1
        try:
            if partition not in self.live:
                self.live.add(partition)
                async with self._changed:
                    self._changed.notify_all()  # a quorum waiter may be counting live clients
            while True:
                if self.end is not None:
                    self.told.add(partition)
                    return self.end
                state = self._task_for(partition, session)
                if state is not None:
                    state.served[partition] = session
                    return state
                await self._alarms.setdefault(partition, asyncio.Event()).wait()
        except asyncio.CancelledError:  # the client went away while idle
            if self.waiting[partition] == 1:
                self.live.discard(partition)
            raise
        finally:
            self.waiting[partition] -= 1

    async def submit(self, partition: int, round_number: int, ticket: str, num_examples: int,
                     metrics: dict[str, float], specs: list[TensorSpec],
                     chunks: AsyncIterator[memoryview]) -> None:
        """Fold one streamed update into the round. Raises UpdateRejected, always counted."""
        state = self.round
        seated = False  # only an update that holds this round's seat can lose it by being bad
        try:
            if state is None or state.closed or round_number != state.number:
                raise UpdateRejected("late", f"round {round_number} is not open")
            if state.tickets.get(partition) != ticket:  # e.g. a ticket from before an aggregator restart
                raise UpdateRejected("not_selected", f"partition {partition} holds no seat in round {state.number}")
            seated = True
            if partition in state.reported or partition in state.rejected:
                raise UpdateRejected("duplicate", f"partition {partition} already answered round {state.number}")
            fold = state.accumulator.begin(float(num_examples))
            decoder = (fold if reads_own_wire(fold)
                       else UpdateDecoder(self.codec, state.accumulator.specs, fold))
            decoder.check_specs(specs)
            async with self._stream_slots:
                await self._fold_stream(state, partition, decoder, specs, chunks)
        except UpdateRejected as exc:
            self.rejected_total[exc.reason] += 1
            if seated and state is not None and not state.closed and state.is_pending(partition):
                state.rejected[partition] = exc.reason
                self._maybe_answered(state)
            log.warning("update rejected: %s (%s)", exc, exc.reason, extra={"partition": partition})
            raise
        state.reported.add(partition)
        state.train_metrics.append((num_examples, metrics))
        state.client_metrics[partition] = metrics
        self._maybe_answered(state)

    async def _fold_stream(self, state: RoundState, partition: int, decoder: WireDecoder,
                           specs: list[TensorSpec], chunks: AsyncIterator[memoryview]) -> None:
        if state.closed:
            raise UpdateRejected("late", f"round {state.number} closed")
        fold = decoder.fold
        state.inflight[partition] = fold
        cursor = ChunkCursor(specs)
        received = 0
        try:
            async for chunk in chunks:
                if state.closed:  # the round loop already took this update back out
                    raise UpdateRejected("late", f"round {state.number} closed while the update streamed")
                try:
                    index, offset = cursor.advance(len(chunk))
                except ValueError as exc:
                    raise UpdateRejected("malformed", str(exc)) from exc
                decoder.feed(index, offset, chunk)
                state.bytes_in += len(chunk)
                received += len(chunk)
            if not cursor.done:
                missing = specs[cursor.index].name
                raise UpdateRejected("malformed", f"stream ended before tensor {missing!r} was complete")
            if state.closed:
                raise UpdateRejected("late", f"round {state.number} closed while the update streamed")
            fold.commit()  # may still refuse: a chunk folded on another update's turn failed its screen
        except BaseException:  # refused, or its client went away (the call is cancelled) mid-stream
            if not state.closed:
                fold.abort()
            raise
        finally:
            state.inflight.pop(partition, None)
        state.accepted_wire_bytes += received
        state.accepted_dense_bytes += sum(s.nbytes for s in decoder.specs)

    @staticmethod
    def _maybe_answered(state: RoundState) -> None:
        if not state.pending():
            state.answered.set()

    # --- called by the aggregator's main loop --------------------------------------------
    async def wait_for_quorum(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        async with self._changed:
            while len(self.live) < self.plan.min_available:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    return False
        return True

    def sample(self, round_number: int) -> list[int]:
        """Deterministic in (seed, round, live set), so a resumed job samples the same clients."""
        candidates = sorted(self.live)
        if self.plan.sampling != "poisson" and self.plan.clients_per_round >= len(candidates):
            return candidates  # every live client, as the draw below would pick them (its generator costs ~0.1 ms)
        rng = np.random.default_rng([self.plan.seed, round_number])
        if self.plan.sampling == "poisson":
            q = self.plan.clients_per_round / self.plan.num_partitions
            return [p for p in candidates if rng.random() < q]
        k = min(self.plan.clients_per_round, len(candidates))
        return sorted(int(p) for p in rng.choice(candidates, size=k, replace=False))

    async def run_round(self, number: int, weights: Weights, specs: list[TensorSpec],
                        strategy: Strategy, config_for: Callable[[int], dict[str, Any]] = lambda p: {}) -> RoundOutcome:
        started = time.monotonic()
        self.round = None  # the last round lets go of its weights, whose buffer this round's sum may take
        selected = self.sample(number)
        sent = strategy.broadcast(weights)
        state = RoundState(number, selected, sent, specs_of(sent), strategy.new_round(specs),
                           {p: secrets.token_hex(8) for p in selected}, {p: config_for(p) for p in selected})
        self.round = state
        self._maybe_answered(state)
        await self._notify(selected)
        try:  # asyncio.timeout, not wait_for: no task to wrap the wait in, one wake-up less at the round's end
            async with asyncio.timeout(self.plan.round_timeout_seconds):
                await state.answered.wait()
        except TimeoutError:
            log.warning("round %d timed out after %ss", number, self.plan.round_timeout_seconds)
        state.closed = True
        for fold in state.inflight.values():
            fold.abort()
        dropped = sorted(state.pending())
        for p in dropped:
            if not self.waiting[p]:
                self.live.discard(p)
        self.dropped_total += len(dropped)
        ratio = state.accepted_dense_bytes / state.accepted_wire_bytes if state.accepted_wire_bytes else None
        return RoundOutcome(number, selected, sorted(state.reported), dropped, dict(state.rejected),
                            state.accumulator, state.train_metrics, state.bytes_in, state.bytes_out,
                            time.monotonic() - started, ratio, state.client_metrics)

    # --- checkpointed state (see aggregator/state.py) ----------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The job-wide client counters, and the sampler, whose whole state is its seed (see `sample`)."""
        return {"dropped_total": self.dropped_total, "rejected_total": dict(self.rejected_total),
                "sampler": {"seed": self.plan.seed, "sampling": self.plan.sampling}}, {}

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.dropped_total = int(scalars.get("dropped_total", 0))
        self.rejected_total = Counter(scalars.get("rejected_total", {}))
        sampler = scalars.get("sampler", {})
        if sampler and sampler.get("seed") != self.plan.seed:
            log.warning("spec.seed changed from %s to %s since the checkpoint: later rounds sample other clients",
                        sampler.get("seed"), self.plan.seed)

    async def finish(self, end: JobEnd) -> None:
        self.end = end
        self.round = None
        await self._notify()
