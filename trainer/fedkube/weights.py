"""Between a torch model and the numpy arrays that travel: only floating-point state is federated.

Integer buffers (e.g. BatchNorm's batch counter) stay local to each process; everything that
trains or averages (parameters and float buffers) moves as contiguous numpy arrays, in the
model's own state_dict order, so every process agrees on the layout.
"""

from __future__ import annotations

import numpy as np
import torch

Weights = dict[str, np.ndarray]


def get_weights(model: torch.nn.Module) -> Weights:
    """A copy of the model's floating-point state as numpy arrays on the CPU."""
    return {name: t.detach().to("cpu", copy=True).numpy()
            for name, t in model.state_dict().items() if t.is_floating_point()}


def set_weights(model: torch.nn.Module, weights: Weights) -> None:
    """Load `weights` into the model in place (same names, shapes and dtypes as get_weights)."""
    state = model.state_dict()
    with torch.no_grad():
        for name, array in weights.items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))


def subtract(a: Weights, b: Weights) -> Weights:
    return {name: a[name] - b[name] for name in a}
