"""What a probe of a model's Fisher information needs besides the model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from optuna_aquasurf.features._diverged import DivergedError
from optuna_aquasurf.features._losses import default_loss, sample_targets

FISHER_TYPES = ("empirical", "model")

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class ProbeSettings:
    """The batch, loss, Fisher type and seed of a probe, checked once.

    Parameters
    ----------
    inputs, targets, loss_fn, fisher, seed
        As in :func:`~optuna_aquasurf.features.kfac_eigenvalues`; ``inputs`` is kept as a tuple
        (of one tensor for a single batch). ``seed`` also seeds the initial weights in a
        :class:`~optuna_aquasurf.features.FisherProbe`.

    Raises
    ------
    ValueError
        When ``fisher`` is not one of :data:`FISHER_TYPES`.
    """

    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor
    loss_fn: LossFunction | None = None
    fisher: str = "empirical"
    seed: int = 0

    def __post_init__(self):
        if self.fisher not in FISHER_TYPES:
            raise ValueError(f"fisher must be one of {FISHER_TYPES}, got {self.fisher!r}")
        if not isinstance(self.inputs, tuple):
            inputs = tuple(self.inputs) if isinstance(self.inputs, list) else (self.inputs,)
            object.__setattr__(self, "inputs", inputs)

    @property
    def batch_size(self) -> int:
        """``N``, the first dimension of the targets."""
        return self.targets.shape[0]

    def to(self, device: str | torch.device) -> ProbeSettings:
        """The same settings with the inputs and targets detached and on ``device``."""
        return replace(
            self,
            inputs=tuple(t.detach().to(device) for t in self.inputs),
            targets=self.targets.detach().to(device),
        )

    def stacked_inputs(self, stack: int) -> tuple[torch.Tensor, ...]:
        """The inputs of ``stack`` candidates: that many copies, along the batch dimension."""
        if stack == 1:
            return self.inputs
        return tuple(torch.cat([t] * stack) for t in self.inputs)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        """The batch-mean loss of one candidate's outputs.

        Raises
        ------
        DivergedError
            When the outputs or the loss are not finite.
        ValueError
            When ``loss_fn`` does not return a scalar.
        """
        if not torch.isfinite(outputs).all():
            raise DivergedError("the model outputs are not finite")
        targets = self.targets
        if self.fisher == "model":
            targets = sample_targets(outputs, targets, self.seed)
        loss = (self.loss_fn or default_loss)(outputs, targets)
        if loss.ndim != 0:
            raise ValueError(
                f"loss_fn must return the batch-mean loss (a scalar), got {loss.shape}"
            )
        if not torch.isfinite(loss):
            raise DivergedError(f"the loss is not finite ({loss.item()})")
        return loss
