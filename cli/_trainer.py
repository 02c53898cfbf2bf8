"""The built-in trainer of classifiers, used when the model file defines ``data()``."""

from __future__ import annotations

import math

import optuna
import torch
import torch.nn.functional as F
from torch import nn


class Diverged(Exception):
    """Training produced a loss, outputs or a score that is not finite."""


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    trial: optuna.Trial,
    device: torch.device,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
) -> float:
    """Train with cross-entropy and return the validation accuracy of the last epoch.

    AdamW with a cosine learning-rate schedule over the epochs; mixed precision on CUDA
    (bfloat16 where supported, else float16 with loss scaling). The accuracy of each epoch is
    reported to ``trial`` for pruning.

    Parameters
    ----------
    model
        The network, on ``device``.
    train_loader, val_loader
        Iterables of ``(inputs, labels)`` batches, labels as class indices.
    trial
        The trial to report to (in a study of one objective: Optuna prunes no other).
    device
        Where batches go.
    epochs, lr, weight_decay
        Length of training, peak learning rate and AdamW weight decay.

    Raises
    ------
    Diverged
        When a training loss or a validation output is not finite.
    optuna.TrialPruned
        When the pruner stops the trial.
    """
    amp = _amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    accuracy = math.nan
    for epoch in range(1, epochs + 1):
        model.train()
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(inputs), labels)
            if not torch.isfinite(loss):
                raise Diverged(f"training loss is {loss.item()} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        schedule.step()
        accuracy = evaluate(model, val_loader, device)
        if len(trial.study.directions) > 1:
            continue  # Optuna prunes studies of one objective only
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation accuracy {accuracy:.4f} after epoch {epoch}")
    return accuracy


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device) -> float:
    """Accuracy of ``model`` on ``loader``.

    Raises
    ------
    Diverged
        When an output is not finite.
    """
    amp = _amp_dtype(device)
    model.eval()
    correct = total = 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            outputs = model(inputs)
        if not torch.isfinite(outputs).all():
            raise Diverged("validation outputs are not finite")
        correct += (outputs.argmax(dim=1) == labels).sum().item()
        total += len(labels)
    if total == 0:
        raise ValueError("the validation loader of data() gave no batches")
    return correct / total


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
