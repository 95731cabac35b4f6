"""Model building blocks the built-in tabular and time-series tasks share."""

from __future__ import annotations

import torch


def mlp(in_features: int, hidden_sizes: tuple[int, ...], out_features: int) -> torch.nn.Sequential:
    """Linear layers with ReLU between them; no hidden sizes gives a linear model."""
    layers: list[torch.nn.Module] = []
    width = in_features
    for hidden in hidden_sizes:
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        width = hidden
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, out_features))
