"""Any timm model on your own images, with its activations searched.

    AQUASURF_DATA=/path/to/images aquasurf optimize examples/timm_imagefolder.py --n-trials 30

``/path/to/images`` holds ``train/`` and ``val/``, each with one folder of images per class
(torchvision's ImageFolder layout). Without ``AQUASURF_DATA`` the example makes synthetic images
of 10 classes (a noisy colour pattern per class), to try the command out.

Settings, by environment variable: ``AQUASURF_MODEL`` (a timm model name, default ``resnet18``;
random weights, nothing is downloaded), ``AQUASURF_SIZE`` (image side, default 32),
``AQUASURF_EPOCHS`` (default 5). Each trial replaces the model's activations (ReLU, GELU,
SiLU... but not its gates) by the candidate function: see ``optuna_aquasurf.integrations``.

The map of the functions also uses the Fisher spectrum of the model (``fisher_batch``): for
resnet18 at 32x32 that is about 7 minutes for the paper's 2,918 functions on 2 CPU cores
(``benchmarks/bench_fisher.py``), computed in the background while the first trials (the
baselines) train, and stored with the study.
"""

import os
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

MODEL = os.environ.get("AQUASURF_MODEL", "resnet18")
SIZE = int(os.environ.get("AQUASURF_SIZE", "32"))
DATA = os.environ.get("AQUASURF_DATA")
BATCH = 64

#: Settings of the built-in trainer.
EPOCHS = int(os.environ.get("AQUASURF_EPOCHS", "5"))
LR = 1e-3


def _num_classes() -> int:
    if DATA is None:
        return 10
    return sum(1 for entry in (Path(DATA) / "train").iterdir() if entry.is_dir())


def model() -> torch.nn.Module:
    """The timm model, with random weights; ``aquasurf`` swaps its activations each trial."""
    return timm.create_model(MODEL, pretrained=False, num_classes=_num_classes())


def data() -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders: the ImageFolder at AQUASURF_DATA, or synthetic images."""
    return _loader(_dataset("train", augment=True), shuffle=True), _loader(_dataset("val"))


def fisher_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 32 training images, without augmentation: the same batch in every process, so
    that the map process, workers and resumed runs share the Fisher features."""
    return next(iter(DataLoader(_dataset("train"), batch_size=32)))


def _dataset(split: str, augment: bool = False):
    """A split of the ImageFolder at AQUASURF_DATA (with random crops and flips if
    ``augment``), or of the synthetic images."""
    if DATA is None:
        return _synthetic(512, seed=1) if split == "train" else _synthetic(256, seed=2)
    from torchvision import datasets, transforms

    normalize = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if augment:
        steps = [
            transforms.RandomResizedCrop(SIZE, scale=(0.5, 1.0)),
            transforms.RandomHorizontalFlip(),
        ]
    else:
        steps = [transforms.Resize(SIZE), transforms.CenterCrop(SIZE)]
    transform = transforms.Compose([*steps, transforms.ToTensor(), normalize])
    return datasets.ImageFolder(Path(DATA) / split, transform)


def _loader(dataset, shuffle: bool = False) -> DataLoader:
    workers = 0 if DATA is None else min(8, os.cpu_count() or 1)
    return DataLoader(dataset, batch_size=BATCH, shuffle=shuffle, num_workers=workers)


def _synthetic(n: int, seed: int) -> TensorDataset:
    """``n`` noisy images: class ``k`` is a fixed random colour pattern ``k`` plus noise."""
    patterns = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    patterns = torch.nn.functional.interpolate(patterns, size=SIZE, mode="bilinear")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = patterns[labels] + 2.5 * torch.randn(n, 3, SIZE, SIZE, generator=generator)
    return TensorDataset(images, labels)
