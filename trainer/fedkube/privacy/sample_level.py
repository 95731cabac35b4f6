"""Sample-level DP-SGD inside each client (Opacus), with every client's epsilon at the aggregator.

Each client clips per-example gradients to C and adds N(0, (z C)^2) at each step of local
training over Poisson-sampled batches, so what it sends protects each of its examples whatever
the aggregator does. Its epsilon is the composition of all the noisy steps it has taken in the
job: the aggregator tells it how many it took before (it checkpoints them, so neither a client
nor an aggregator restart resets them), and the client reports its steps, sampling rate and
epsilon after each round. The job's epsilon is the largest of its clients'.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fedkube.plan import TrainSettings
from fedkube.privacy.accountant import Accountant, RoundEvent
from fedkube.privacy.base import (
    CONFIG_KEY,
    EPSILON_METRIC,
    SAMPLE_RATE_METRIC,
    STEPS_METRIC,
    AggregatorPrivacy,
    budget_message,
    scrub,
)
from fedkube.privacy.settings import PrivacySettings
from fedkube.tasks.base import ClassificationTask, Task, TaskError, TrainResult, make_optimizer

log = logging.getLogger(__name__)


def sample_epsilon(settings: PrivacySettings, rate: float, steps: int) -> float:
    """Epsilon at `settings.delta` of `steps` DP-SGD steps at Poisson rate `rate`."""
    if steps == 0:
        return 0.0
    accountant = Accountant(settings.accountant, "poisson")
    accountant.compose(RoundEvent(settings.noise_multiplier, "poisson", rate, 1, steps))  # poisson: rate only
    return accountant.epsilon(settings.delta)


def train_dp_sgd(task: Task, model: torch.nn.Module, data: Dataset[Any], train: TrainSettings,
                 device: torch.device, settings: PrivacySettings) -> tuple[TrainResult, float, int]:
    """Local training with Opacus; returns the result, the sampling rate and the steps taken."""
    if not isinstance(task, ClassificationTask):
        raise TaskError(f"spec.privacy.level sample needs a task built on ClassificationTask, "
                        f"not {type(task).__name__}")
    from opacus import PrivacyEngine  # heavy import, only for clients that run DP-SGD

    if settings.delta * len(data) >= 1:  # type: ignore[arg-type]
        log.warning("spec.privacy.delta %g is not below 1/%d, one over this client's examples: a delta that "
                    "large allows revealing an example outright", settings.delta, len(data))  # type: ignore[arg-type]

    # Batches and noise come from OS entropy: an adversary knowing the manifest's seed learns neither.
    generator = torch.Generator().manual_seed(secrets.randbits(63))
    loader = DataLoader(data, batch_size=train.batch_size, shuffle=True, generator=generator)
    optimizer = make_optimizer(model.parameters(), train.optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        private_model, private_optimizer, private_loader = PrivacyEngine().make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=settings.noise_multiplier,
            max_grad_norm=settings.clipping_norm, poisson_sampling=True,
            noise_generator=torch.Generator(device=device).manual_seed(secrets.randbits(63)))
    try:
        result = task.run_epochs(private_model, private_loader, private_optimizer, train.local_epochs, device)
    finally:
        private_model._close()  # remove Opacus's hooks: the next round wraps the model afresh
    rate = 1 / len(private_loader)
    return result, rate, train.local_epochs * len(private_loader)


def client_report(settings: PrivacySettings, config: dict[str, Any], rate: float, steps: int) -> dict[str, float]:
    """What a DP-SGD client adds to its update's metrics."""
    prior = int(config.get(CONFIG_KEY, {}).get("priorSteps", 0))
    return {EPSILON_METRIC: sample_epsilon(settings, rate, prior + steps), SAMPLE_RATE_METRIC: rate,
            STEPS_METRIC: float(steps)}


class SampleLevelDP(AggregatorPrivacy):
    """The aggregator's ledger of every client's DP-SGD steps, and the job's budget over them."""

    def __init__(self, settings: PrivacySettings) -> None:
        self.settings = settings
        self.clients: dict[int, dict[str, float]] = {}  # partition -> rate, steps, roundSteps, epsilon
        self.exhausted = False

    def round_config(self, partition: int) -> dict[str, Any]:
        return {CONFIG_KEY: {"priorSteps": int(self.clients.get(partition, {}).get("steps", 0))}}

    @property
    def epsilon(self) -> float:
        return max((c["epsilon"] for c in self.clients.values()), default=0.0)

    def budget_exhausted(self) -> str | None:
        """Stop when a client that has trained would pass the target in one more round like its last."""
        target = self.settings.target_epsilon
        if target is None or not self.clients:
            return None
        following = max(sample_epsilon(self.settings, c["rate"], int(c["steps"] + c["roundSteps"]))
                        for c in self.clients.values())
        if following <= target and self.epsilon <= target:
            return None
        self.exhausted = True
        return budget_message(following, target, self.epsilon, self.settings.delta, self.rounds)

    @property
    def rounds(self) -> int:
        return int(max((c.get("rounds", 0) for c in self.clients.values()), default=0))

    def record(self, entry: dict[str, Any], client_metrics: dict[int, dict[str, float]], completed: bool) -> None:
        """Every delivered update spent its client's budget, whether or not the round completed."""
        scrub(entry)
        for partition, metrics in client_metrics.items():
            if STEPS_METRIC not in metrics:
                continue
            ledger = self.clients.setdefault(partition, {"steps": 0, "rounds": 0})
            steps = int(metrics[STEPS_METRIC])
            ledger.update(rate=float(metrics[SAMPLE_RATE_METRIC]), steps=ledger["steps"] + steps, roundSteps=steps,
                          rounds=ledger["rounds"] + 1)
            ledger["epsilon"] = sample_epsilon(self.settings, ledger["rate"], int(ledger["steps"]))
        entry.update(epsilon=self.epsilon, delta=self.settings.delta,
                     client_epsilon={str(p): client_metrics[p].get(EPSILON_METRIC) for p in sorted(client_metrics)})

    def state(self) -> dict[str, Any]:
        return {"clients": {str(p): c for p, c in self.clients.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.clients = {int(p): dict(c) for p, c in state.get("clients", {}).items()}

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {"level": s.level, "epsilon": self.epsilon, "delta": s.delta, "targetEpsilon": s.target_epsilon,
                "accountant": s.accountant, "noiseMultiplier": s.noise_multiplier, "clippingNorm": s.clipping_norm,
                "budgetExhausted": self.exhausted,
                "clients": {str(p): c["epsilon"] for p, c in sorted(self.clients.items())}}
