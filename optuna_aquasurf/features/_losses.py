"""The default loss of a probe, and the targets that the model Fisher samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for integer targets, mean squared error for float targets (batch means)."""
    if targets.is_floating_point():
        if outputs.shape != targets.shape:
            raise ValueError(
                f"float targets mean regression (MSE) and need the outputs' shape "
                f"{tuple(outputs.shape)}, got {tuple(targets.shape)}; pass loss_fn otherwise"
            )
        return F.mse_loss(outputs, targets)
    return F.cross_entropy(outputs.movedim(_class_dim(outputs, targets), 1), targets)


def sample_targets(outputs: torch.Tensor, targets: torch.Tensor, seed: int) -> torch.Tensor:
    """Targets drawn from the model's predictive distribution, on the CPU for reproducibility."""
    generator = torch.Generator().manual_seed(seed)
    out = outputs.detach().cpu()
    if targets.is_floating_point():
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return (out + noise).to(device=targets.device, dtype=targets.dtype)
    logits = out.movedim(_class_dim(outputs, targets), -1)
    probs = torch.softmax(logits.double(), dim=-1).reshape(-1, logits.shape[-1])
    drawn = torch.multinomial(probs, 1, generator=generator)
    return drawn.reshape(targets.shape).to(device=targets.device, dtype=targets.dtype)


def _class_dim(outputs: torch.Tensor, targets: torch.Tensor) -> int:
    if outputs.ndim == targets.ndim + 1:
        if outputs.shape[:1] + outputs.shape[2:] == targets.shape:
            return 1
        if outputs.shape[:-1] == targets.shape:
            return -1
    raise ValueError(
        f"integer targets of shape {tuple(targets.shape)} do not fit class scores of shape "
        f"{tuple(outputs.shape)} (classes in dimension 1 or last); pass loss_fn"
    )
