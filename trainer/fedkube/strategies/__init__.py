"""Strategies, one per file, built from `spec.strategy`."""

from __future__ import annotations

from fedkube.spec.model import StrategySpec
from fedkube.strategies.base import Strategy, Weights
from fedkube.strategies.fedavg import FedAvg

__all__ = ["Strategy", "Weights", "build_strategy"]


def build_strategy(spec: StrategySpec) -> Strategy:
    if spec.name == "fedavg":
        return FedAvg(server_lr=spec.server_lr)
    raise ValueError(f"spec.strategy.name: strategy {spec.name!r} is not supported yet")
