"""Epsilon for the rounds a job has run, from dp-accounting, for the exact mechanism each used.

A round is one `RoundEvent`: a Gaussian query of noise multiplier z over sampled clients (or,
for DP-SGD, `steps` such queries over sampled examples). Poisson sampling is accounted under
add/remove-one adjacency, where one participant moves the clipped sum by at most C. Fixed-size
sampling is accounted as sampling without replacement under replace-one adjacency, where
swapping one participant for another moves the sum by up to 2C: the accountant sees z/2.

The accountant keeps the events, not its internal state, so it is JSON in a checkpoint and a
resumed job goes on from the rounds it already spent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

NeighborRel = dp_accounting.NeighboringRelation


@dataclass(frozen=True)
class RoundEvent:
    """One round's mechanism: `steps` Gaussian queries, each on a `rate` fraction of `population`."""

    noise_multiplier: float
    sampling: str          # poisson | fixed
    rate: float            # sampling probability (poisson) or sample size / population (fixed)
    population: int
    steps: int = 1

    @property
    def sample_size(self) -> int:
        return round(self.rate * self.population)

    def dp_event(self) -> dp_accounting.DpEvent:
        gaussian = dp_accounting.GaussianDpEvent
        if self.sampling == "poisson":
            query: dp_accounting.DpEvent = dp_accounting.PoissonSampledDpEvent(
                min(1.0, self.rate), gaussian(self.noise_multiplier))
        elif self.sample_size >= self.population:
            query = gaussian(self.noise_multiplier / 2)
        else:
            query = dp_accounting.SampledWithoutReplacementDpEvent(
                self.population, self.sample_size, gaussian(self.noise_multiplier / 2))
        return query if self.steps == 1 else dp_accounting.SelfComposedDpEvent(query, self.steps)


class Accountant:
    """The composition of a job's rounds so far, and its epsilon at a delta."""

    def __init__(self, kind: str, sampling: str) -> None:
        if kind not in ("rdp", "pld"):
            raise ValueError(f"spec.privacy.accountant: {kind!r} is not one of ['pld', 'rdp']")
        self.kind = kind
        self.relation = NeighborRel.ADD_OR_REMOVE_ONE if sampling == "poisson" else NeighborRel.REPLACE_ONE
        self.events: list[tuple[RoundEvent, int]] = []  # runs of identical events, with their count

    def compose(self, event: RoundEvent, count: int = 1) -> None:
        if self.events and self.events[-1][0] == event:
            self.events[-1] = (event, self.events[-1][1] + count)
        else:
            self.events.append((event, count))

    @property
    def rounds(self) -> int:
        return sum(count for _, count in self.events)

    def epsilon(self, delta: float, extra: RoundEvent | None = None) -> float:
        """Epsilon of everything composed so far, plus `extra` if given (what one more round would cost)."""
        events = list(self.events)
        if extra is not None:  # one more of the last event costs no more to compute than the last
            events[-1:] = [(extra, events[-1][1] + 1)] if events and events[-1][0] == extra else events[-1:] + [
                (extra, 1)]
        if not events:
            return 0.0
        accountant = RdpAccountant(neighboring_relation=self.relation) if self.kind == "rdp" else PLDAccountant(
            neighboring_relation=self.relation)
        accountant.compose(dp_accounting.ComposedDpEvent(
            [e.dp_event() if n == 1 else dp_accounting.SelfComposedDpEvent(e.dp_event(), n) for e, n in events]))
        return float(accountant.get_epsilon(delta))

    def state(self) -> list[dict[str, Any]]:
        return [{**asdict(event), "count": count} for event, count in self.events]

    def load_state(self, state: list[dict[str, Any]]) -> None:
        self.events = []
        for item in state:
            fields = dict(item)
            count = int(fields.pop("count"))
            self.compose(RoundEvent(**fields), count)
