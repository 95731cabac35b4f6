"""The aggregator's side of a privacy mechanism, and the keys both sides agree on.

The aggregator's main loop calls the same five hooks whatever the mechanism: wrap the strategy,
give each sampled client its round settings, ask before a round whether the budget allows it,
record a finished round, and checkpoint. The base class itself is the mechanism of a job
without `spec.privacy`, so the loop has no privacy branches.
"""

from __future__ import annotations

from typing import Any

from fedkube.privacy.settings import PrivacySettings
from fedkube.strategies import Strategy

# In the round config the aggregator sends (RoundInfo.config_json).
CONFIG_KEY = "privacy"
# Metrics a client adds to its update.
UNCLIPPED_METRIC = "dp_unclipped"       # the (noised share of the) unclipped indicator
EPSILON_METRIC = "dp_epsilon"           # sample level: the client's own epsilon so far
SAMPLE_RATE_METRIC = "dp_sample_rate"   # sample level: DP-SGD's Poisson sampling rate
STEPS_METRIC = "dp_steps"               # sample level: noisy steps taken this round
BUDGET_EXHAUSTED = "PrivacyBudgetExhausted"
# Training metrics come from clients' data without noise: a private job does not publish them.
UNPRIVATE_FIELDS = ("train_loss", "train_accuracy", "num_examples")


class AggregatorPrivacy:
    """No privacy: every hook leaves the job as it is. Mechanisms override what they change."""

    settings: PrivacySettings | None = None

    def wrap(self, strategy: Strategy) -> Strategy:
        return strategy

    def round_config(self, partition: int) -> dict[str, Any]:
        """What this client needs from the aggregator for this round's privacy."""
        return {}

    def budget_exhausted(self) -> str | None:
        """Why the next round must not run (it would exceed targetEpsilon), or None."""
        return None

    def record(self, entry: dict[str, Any], client_metrics: dict[int, dict[str, float]], completed: bool) -> None:
        """Account a finished round and fill its metrics.json entry (in place)."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned, so a resumed job's epsilon goes on from there."""

    def status(self) -> dict[str, Any] | None:
        """`privacy` in the status document; None for a job without privacy."""
        return None



def budget_message(epsilon_next: float, target: float, epsilon: float, delta: float, rounds: int) -> str:
    return (f"privacy budget exhausted: another round would reach epsilon {epsilon_next:.4g} > targetEpsilon "
            f"{target:g}; stopped after {rounds} accounted rounds at epsilon {epsilon:.4g} (delta {delta:g})")


def scrub(entry: dict[str, Any]) -> None:
    for key in UNPRIVATE_FIELDS:
        entry.pop(key, None)

