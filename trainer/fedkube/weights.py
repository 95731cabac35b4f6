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


def view_weights(model: torch.nn.Module) -> Weights:
    """The model's floating-point state as numpy views of its tensors: no copy on the CPU.

    For reading a model once it is done changing (a client's delta, the aggregator's initial
    weights), where get_weights' copy of a large model would cost its size in time and memory.
    """
    return view_state(float_state(model))


def float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's floating-point state tensors, detached: they share its memory, so a client that loads and
    reads them every round keeps them and skips a state_dict walk each time (a task trains the model in place)."""
    return {name: t for name, t in model.state_dict().items() if t.is_floating_point()}


def view_state(state: dict[str, torch.Tensor]) -> Weights:
    return {name: t.cpu().numpy() for name, t in state.items()}


class ModelState:
    """The floating-point tensors a client loads the global weights into and reads its update from, every round.

    On the CPU their numpy views are made once (a task trains the model in place, so they stay its memory) and
    the weights are copied by numpy: per tensor, a torch copy and a fresh view cost a small round more than
    everything else the client does to it.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.tensors = float_state(model)
        on_cpu = all(t.device.type == "cpu" for t in self.tensors.values())
        self._views = view_state(self.tensors) if on_cpu else None

    def load(self, weights: Weights) -> None:
        if self._views is None:
            load_state(self.tensors, weights)
            return
        for name, array in weights.items():
            np.copyto(self._views[name], array)

    def read(self) -> Weights:
        """The model's state as numpy arrays: on the CPU, views of it (valid until it trains again)."""
        return dict(self._views) if self._views is not None else view_state(self.tensors)


def weight_shapes(model: torch.nn.Module) -> list[tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each floating-point tensor of the model, without copying it off its device."""
    return [(tuple(t.shape), torch.empty(0, dtype=t.dtype).numpy().dtype) for t in float_state(model).values()]


def share_weights(model: torch.nn.Module, weights: Weights) -> None:
    """Make the model's floating-point state views of `weights` (no copy), e.g. to evaluate them.

    The model must not change them in place (evaluation in eval mode does not). Read-only
    arrays (from a checkpoint) are copied, since torch cannot wrap them.
    """
    state = {name: torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous else a.copy())
             for name, a in weights.items()}
    model.load_state_dict(state, strict=False, assign=True)


def set_weights(model: torch.nn.Module, weights: Weights) -> None:
    """Load `weights` into the model in place (same names, shapes and dtypes as get_weights)."""
    load_state(float_state(model), weights)


def load_state(state: dict[str, torch.Tensor], weights: Weights) -> None:
    """Copy `weights` into `state`'s tensors (detached, so autograd records nothing)."""
    for name, array in weights.items():
        state[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))


def subtract(a: Weights, b: Weights) -> Weights:
    return {name: a[name] - b[name] for name in a}


def subtract_into(a: Weights, b: Weights) -> Weights:
    """`a - b`, written over `b`'s arrays where they are writable and of the result's dtype.

    A client no longer needs the global weights once it has its delta, so the delta takes their
    place instead of a fresh model-sized allocation (and its page faults).
    """
    out = {}
    for name, x in a.items():
        y = b[name]
        fits = y.flags.writeable and y.dtype == np.result_type(x, y) and y.shape == x.shape
        out[name] = np.subtract(x, y, out=y) if fits else x - y
    return out
