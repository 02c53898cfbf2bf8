"""A small CNN on scikit-learn's handwritten digits (8x8 images), on the CPU.

    aquasurf optimize examples/digits_cnn.py --n-trials 20

searches the paper's 2,918 activation functions in a few minutes on 2 CPU cores, a few seconds
per trial. The map of the space (computed once per study, with the Fisher spectrum of this network
from ``fisher_batch``) is computed in the background while the 8 baselines train; the first
surrogate pick waits for what is left of it. ``AQUASURF_EPOCHS=1`` makes trials quicker.
"""

import os

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: Settings of the built-in trainer.
EPOCHS = int(os.environ.get("AQUASURF_EPOCHS", "5"))
LR = 3e-3

# A network this small trains fastest on one CPU thread (more threads only wait on each other).
torch.set_num_threads(1)


def build_model(activation: nn.Module) -> nn.Module:
    """Two convolutions and a classifier, with ``activation`` after each hidden layer."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        activation,
        nn.Conv2d(16, 32, 3, padding=1),
        activation,
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        activation,
        nn.Linear(64, 10),
    )


def _tensors() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return (images - 0.3) / 0.4, torch.tensor(digits.target)


def data() -> tuple[DataLoader, DataLoader]:
    """1,437 training and 360 validation images (a fixed split)."""
    images, labels = _tensors()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, val = order[:1437], order[1437:]
    train_set = TensorDataset(images[train], labels[train])
    val_set = TensorDataset(images[val], labels[val])
    return DataLoader(train_set, batch_size=64, shuffle=True), DataLoader(val_set, batch_size=360)


def fisher_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """64 images for the Fisher features of the map."""
    images, labels = _tensors()
    return images[:64], labels[:64]
