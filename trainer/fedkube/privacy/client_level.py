"""Client-level DP-FedAvg (McMahan et al. 2018): clip every update, add Gaussian noise to the sum.

Clients clip their own update to the round's clip norm C. In `central` placement the aggregator
also measures each update's norm as its chunks fold in and, should a decoded update (after lossy
compression, or from a client that did not clip) exceed C, scales its folded chunks down to C
before committing it; then it adds N(0, (z C)^2) to the sum.
In `distributed` placement each client adds its share (see `noise`) and the aggregator adds
nothing. Updates are summed with weight 1, not by example count, which would be unbounded and
private; the sum is divided by the number of reports (fixed-size sampling) or by the expected
number of sampled clients (Poisson sampling, where the count itself is private).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from fedkube.aggregator.accumulate import UpdateFold, WeightedSum, check_weight
from fedkube.privacy.accountant import Accountant, RoundEvent
from fedkube.privacy.adaptive import AdaptiveClipNorm
from fedkube.privacy.base import CONFIG_KEY, UNCLIPPED_METRIC, AggregatorPrivacy, budget_message, scrub
from fedkube.privacy.clipping import SHRINK
from fedkube.privacy.noise import add_gaussian, noise_generator
from fedkube.privacy.settings import PrivacySettings
from fedkube.protocol.tensors import TensorSpec
from fedkube.strategies import Accumulator, Strategy, Weights

log = logging.getLogger(__name__)

class ClippedFold(UpdateFold):
    """One update entering a ClippedSum: weight 1, its L2 norm measured chunk by chunk, clipped on commit."""

    def __init__(self, target: ClippedSum) -> None:
        super().__init__(target, 1.0)
        self.bound = target.bound
        self.squared = 0.0

    def _measure(self, values: np.ndarray) -> None:
        wide = values.astype(np.float64)
        self.squared += float(np.dot(wide, wide))

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None:
        super().add_dense(index, start, values)
        self._measure(values)

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None:
        super().add_sparse(index, positions, values)
        self._measure(values)

    def commit(self) -> None:
        """Scale the folded update down to the bound if it exceeds it (the chunks are still held)."""
        norm = math.sqrt(self.squared)
        if self.bound is not None and norm > self.bound:
            excess = 1 - self.bound / norm * (1 - SHRINK)
            self.take_back(self.weight * excess)
            log.info("an update of norm %.6g was clipped to %.6g at the aggregator", norm, self.bound)
        super().commit()


class ClippedSum(WeightedSum):
    """The unweighted sum of clipped updates; `bound` None skips the norm check (noised updates)."""

    def __init__(self, specs: list[TensorSpec], bound: float | None, exact: bool = False) -> None:
        super().__init__(specs, exact)
        self.bound = bound

    def begin(self, weight: float) -> UpdateFold:
        check_weight(weight)  # still refuses a malformed weight
        return ClippedFold(self)


class PrivateStrategy(Strategy):
    """Any sum-based strategy, fed the noised mean of clipped updates instead of the weighted mean."""

    def __init__(self, inner: Strategy, mechanism: ClientLevelDP) -> None:
        super().__init__(inner.server_lr)
        self.inner, self.mechanism = inner, mechanism
        self.name, self.exact_sum = inner.name, inner.exact_sum

    def broadcast(self, weights: Weights) -> Weights:
        return self.inner.broadcast(weights)

    def new_round(self, specs: list[TensorSpec]) -> Accumulator:
        return self.mechanism.new_sum(specs, self.exact_sum)

    def apply(self, weights: Weights, accumulated: Accumulator) -> Weights:
        if not isinstance(accumulated, WeightedSum):
            raise TypeError(f"client-level DP noises a sum, got {type(accumulated).__name__}")
        self.mechanism.noise_sum(accumulated)
        return self.inner.apply(weights, accumulated)

    def state(self) -> tuple[dict[str, Any], Weights]:
        return self.inner.state()

    def load_state(self, scalars: dict[str, Any], arrays: Weights) -> None:
        self.inner.load_state(scalars, arrays)


class ClientLevelDP(AggregatorPrivacy):
    def __init__(self, settings: PrivacySettings) -> None:
        self.settings = settings
        self.clipping_norm = settings.clipping_norm
        self.adaptive = AdaptiveClipNorm(settings.adaptive, settings.clipping_norm) if settings.adaptive else None
        self.accountant = Accountant(settings.accountant, settings.sampling)
        self.rng = noise_generator()
        self.epsilon = 0.0
        self.exhausted = False
        if settings.placement == "distributed" and not settings.masked:
            log.warning("spec.privacy.placement is distributed: each client adds 1/%d of the noise variance; "
                        "without secure aggregation the aggregator sees each client's less-noised update",
                        settings.min_reports)

    def round_event(self) -> RoundEvent:
        s = self.settings
        return RoundEvent(s.noise_multiplier, s.sampling, s.expected_clients / s.population, s.population)

    def wrap(self, strategy: Strategy) -> Strategy:
        return PrivateStrategy(strategy, self)

    def round_config(self, partition: int) -> dict[str, Any]:
        return {CONFIG_KEY: {"clippingNorm": self.clipping_norm}}

    def new_sum(self, specs: list[TensorSpec], exact: bool = False) -> ClippedSum:
        return ClippedSum(specs, self.clipping_norm if self.settings.placement == "central" else None, exact)

    def denominator(self, reports: int) -> float:
        """Reports under fixed-size sampling; the expected sample under Poisson, whose count is private."""
        return float(self.settings.expected_clients if self.settings.sampling == "poisson" else reports)

    def noise_sum(self, accumulated: WeightedSum) -> None:
        """Add the central noise (none when distributed: the clients did) and set the mean's denominator."""
        if self.settings.placement == "central":
            add_gaussian(accumulated.sums, self.settings.update_noise_multiplier * self.clipping_norm, self.rng)
        accumulated.total_weight = self.denominator(accumulated.count)

    def budget_exhausted(self) -> str | None:
        target = self.settings.target_epsilon
        if target is None:
            return None
        following = self.accountant.epsilon(self.settings.delta, self.round_event())
        if following <= target:
            return None
        self.exhausted = True
        return budget_message(following, target, self.epsilon, self.settings.delta, self.accountant.rounds)

    def record(self, entry: dict[str, Any], client_metrics: dict[int, dict[str, float]], completed: bool) -> None:
        scrub(entry)
        used = self.clipping_norm
        if completed:
            self.accountant.compose(self.round_event())
            self.epsilon = self.accountant.epsilon(self.settings.delta)
            if self.adaptive is not None:
                entry["unclipped_fraction"] = self._adapt(client_metrics)
        entry.update(epsilon=self.epsilon, delta=self.settings.delta, clipping_norm=used,
                     noise_std=self.settings.update_noise_multiplier * used)

    def _adapt(self, client_metrics: dict[int, dict[str, float]]) -> float:
        """Move the clip norm with the noised count of unclipped updates; returns the noised fraction."""
        assert self.adaptive is not None
        count = sum(m.get(UNCLIPPED_METRIC, 0.0) for m in client_metrics.values())
        if self.settings.placement == "central":
            count += float(self.rng.normal(0.0, self.settings.count_noise_std))
        denominator = self.denominator(len(client_metrics))
        self.clipping_norm = self.adaptive.update(count, denominator)
        return count / denominator

    def state(self) -> dict[str, Any]:
        return {"events": self.accountant.state(), "clippingNorm": self.clipping_norm, "epsilon": self.epsilon}

    def load_state(self, state: dict[str, Any]) -> None:
        self.accountant.load_state(state.get("events", []))
        self.clipping_norm = float(state.get("clippingNorm", self.settings.clipping_norm))
        if self.adaptive is not None:
            self.adaptive.norm = self.clipping_norm
        self.epsilon = self.accountant.epsilon(self.settings.delta)

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {"level": s.level, "placement": s.placement, "epsilon": self.epsilon, "delta": s.delta,
                "targetEpsilon": s.target_epsilon, "accountant": s.accountant, "rounds": self.accountant.rounds,
                "noiseMultiplier": s.noise_multiplier, "clippingNorm": self.clipping_norm,
                "budgetExhausted": self.exhausted}
