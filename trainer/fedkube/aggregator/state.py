"""What the aggregator carries from round to round, gathered for a checkpoint and put back on resume.

Every part that keeps state across rounds (the strategy's server-optimiser moments or control
variates, the privacy accountant, the client counters and sampler) implements the small
`Stateful` protocol: `state()` returns JSON-able scalars and named arrays, `load_state()` takes
them back. The aggregator registers its parts by name; a part's scalars go under that name in
state.json and its arrays get a `name/` prefix in state.safetensors, so parts never collide and a
part added later needs no change to the checkpoint format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from fedkube.protocol.tensors import specs_of

Arrays = dict[str, np.ndarray]


class ResumeError(RuntimeError):
    """A checkpoint that verified but cannot continue this job; the message names it and why."""


class Stateful(Protocol):
    def state(self) -> tuple[dict[str, Any], Arrays]:
        """JSON-able scalars and named arrays that, loaded back, continue exactly where this left off."""
        ...

    def load_state(self, scalars: dict[str, Any], arrays: Arrays) -> None:
        """Restore what `state()` returned."""
        ...


class ScalarState:
    """A part whose state is scalars only (`state() -> dict`, `load_state(dict)`), seen as Stateful."""

    def __init__(self, part: Any) -> None:
        self.part = part

    def state(self) -> tuple[dict[str, Any], Arrays]:
        return self.part.state(), {}

    def load_state(self, scalars: dict[str, Any], arrays: Arrays) -> None:
        self.part.load_state(scalars)


def gather(parts: Mapping[str, Stateful]) -> tuple[dict[str, Any], Arrays]:
    """Each part's scalars under its name, and its arrays under `name/`."""
    scalars: dict[str, Any] = {}
    arrays: Arrays = {}
    for name, part in parts.items():
        part_scalars, part_arrays = part.state()
        scalars[name] = part_scalars
        arrays.update({f"{name}/{key}": value for key, value in part_arrays.items()})
    return scalars, arrays


def restore(parts: Mapping[str, Stateful], scalars: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Hand each part back what `gather` took from it; a part the checkpoint lacks gets empty state."""
    for name, part in parts.items():
        prefix = f"{name}/"
        part.load_state(dict(scalars.get(name, {})),
                        {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)})


def weights_in_model_order(model: Arrays, checkpoint: Arrays, where: str) -> Arrays:
    """The checkpoint's tensors in the model's order (the order they travel in), after checking they fit.

    A resumed model must have the task's tensors exactly; anything else is another job's checkpoint.
    """
    expected = {s.name: s for s in specs_of(model)}
    found = {s.name: s for s in specs_of(checkpoint)}
    if expected != found:
        missing = sorted(expected.keys() - found.keys())
        unexpected = sorted(found.keys() - expected.keys())
        changed = sorted(n for n in expected.keys() & found.keys() if expected[n] != found[n])
        raise ResumeError(f"the weights in {where} do not fit this job's model (missing {missing}, unexpected "
                          f"{unexpected}, other shape or dtype {changed}): point spec.checkpoint.uri elsewhere "
                          "or remove those checkpoints")
    return {name: checkpoint[name] for name in model}
