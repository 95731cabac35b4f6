"""What FedProx and SCAFFOLD change in local training, applied to any task's training loop.

Both only add a term to each parameter's gradient: FedProx's proximal term
`mu/2 * ||w - w_global||^2` in the loss contributes `mu * (w - w_global)`, and SCAFFOLD adds the
drift correction `c - c_i`. Gradient hooks on the parameters add them during every backward pass,
so a task's own `train()` needs no knowledge of the strategy. The hooks also record the mean raw
gradient of the round, which is SCAFFOLD's next client control variate.
"""

from __future__ import annotations

from types import TracebackType

import torch

from fedkube.weights import Weights


class LocalCorrections:
    """A context that hooks the model's parameters for the length of one round's local training."""

    def __init__(self, model: torch.nn.Module, mu: float = 0.0, drift: Weights | None = None) -> None:
        """`mu`: FedProx coefficient (0 for none); `drift`: SCAFFOLD's `c - c_i` by parameter name."""
        self.model, self.mu, self.drift = model, mu, drift
        self.gradient_sums: dict[str, torch.Tensor] = {}
        self.steps: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LocalCorrections:
        if self.mu == 0 and self.drift is None:
            return self
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                self._handles.append(param.register_hook(self._hook(name, param)))
        return self

    def _hook(self, name: str, param: torch.nn.Parameter):  # type: ignore[no-untyped-def]
        anchor = param.detach().clone() if self.mu else None
        offset = None
        if self.drift is not None and name in self.drift:
            offset = torch.as_tensor(self.drift[name], device=param.device, dtype=param.dtype)

        def hook(grad: torch.Tensor) -> torch.Tensor:
            if offset is not None:
                total = self.gradient_sums.get(name)
                self.gradient_sums[name] = grad.detach().clone() if total is None else total.add_(grad)
                self.steps[name] = self.steps.get(name, 0) + 1
                grad = grad + offset
            if anchor is not None:
                grad = grad + self.mu * (param.detach() - anchor)
            return grad

        return hook

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def mean_gradients(self) -> Weights:
        """The mean raw (uncorrected) gradient of each tracked parameter over the round's steps."""
        return {name: (total / self.steps[name]).cpu().numpy() for name, total in self.gradient_sums.items()}
