"""Strategies, one per file, built from `spec.strategy`."""

from __future__ import annotations

from fedkube.spec.model import StrategySpec
from fedkube.strategies.base import Accumulator, Strategy, Weights
from fedkube.strategies.fedadagrad import FedAdagrad
from fedkube.strategies.fedadam import FedAdam
from fedkube.strategies.fedavg import FedAvg
from fedkube.strategies.fedopt import DEFAULT_BETA1, DEFAULT_BETA2, DEFAULT_ETA, DEFAULT_TAU, FedOpt
from fedkube.strategies.fedprox import DEFAULT_MU, FedProx
from fedkube.strategies.fedyogi import FedYogi
from fedkube.strategies.krum import Krum
from fedkube.strategies.median import Median
from fedkube.strategies.scaffold import Scaffold
from fedkube.strategies.trimmed_mean import DEFAULT_TRIM_BETA, TrimmedMean

__all__ = ["Accumulator", "ROBUST", "Strategy", "Weights", "build_strategy", "proximal_mu"]

# Rules that need every update in plaintext, all at once (refused with secure aggregation).
ROBUST = frozenset({"median", "trimmedmean", "krum"})
FEDOPT: dict[str, type[FedOpt]] = {"fedadam": FedAdam, "fedyogi": FedYogi, "fedadagrad": FedAdagrad}


def _or(value: float | int | None, default: float | int) -> float | int:
    return default if value is None else value


def proximal_mu(spec: StrategySpec) -> float:
    """The FedProx coefficient clients add to their objective (0 for every other strategy)."""
    return float(_or(spec.mu, DEFAULT_MU)) if spec.name == "fedprox" else 0.0


def build_strategy(spec: StrategySpec, num_clients: int) -> Strategy:
    """The strategy `spec` names; `num_clients` (the job's partitions) scales SCAFFOLD's variate step."""
    strategy = _named_strategy(spec, num_clients)
    strategy.exact_sum = spec.exact_sum
    return strategy


def _named_strategy(spec: StrategySpec, num_clients: int) -> Strategy:
    if spec.name in FEDOPT:
        return FEDOPT[spec.name](server_lr=_or(spec.server_lr, DEFAULT_ETA), beta1=_or(spec.beta1, DEFAULT_BETA1),
                                 beta2=_or(spec.beta2, DEFAULT_BETA2), tau=_or(spec.tau, DEFAULT_TAU))
    lr = _or(spec.server_lr, 1.0)
    if spec.name == "fedavg":
        return FedAvg(lr)
    if spec.name == "fedprox":
        return FedProx(lr, proximal_mu(spec))
    if spec.name == "scaffold":
        return Scaffold(num_clients, lr)
    if spec.name == "median":
        return Median(lr)
    if spec.name == "trimmedmean":
        return TrimmedMean(lr, _or(spec.trim_beta, DEFAULT_TRIM_BETA))
    if spec.name == "krum":
        return Krum(lr, int(_or(spec.byzantine, 0)), int(_or(spec.multi_krum, 1)))
    raise ValueError(f"spec.strategy.name: unknown strategy {spec.name!r}")
