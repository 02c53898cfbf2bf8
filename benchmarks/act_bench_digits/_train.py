"""Data, architectures and the training run of Act-Bench-Digits (one function, one architecture)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from benchmarks.act_bench_digits._files import MAIN_SEED
from optuna_aquasurf import ActivationFunction

#: Seed of the stratified train/validation/test split (fixed for every run and architecture).
SPLIT_SEED = 0
#: Accuracy recorded for a run whose training loss became NaN or infinite (10 balanced classes).
CHANCE_ACCURACY = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """How one function is trained; stored next to each result file, checked on resume."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0

    def as_dict(self) -> dict:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
        }


#: Sized so that one function trains in about 0.5-1.5 s on one CPU thread (see README.md).
DEFAULT_CONFIGS = {
    "cnn": TrainConfig(epochs=8, batch_size=64, lr=3e-3),
    "vit": TrainConfig(epochs=10, batch_size=64, lr=5e-3),
    "resnet": TrainConfig(epochs=6, batch_size=64, lr=3e-3),
}


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (n, 1, 8, 8), standardised with the training pixels' mean and std
    y: torch.Tensor  # (n,) int64


@lru_cache(maxsize=1)
def digits_splits() -> dict[str, Split]:
    """scikit-learn digits, split 60/20/20 (stratified, seed 0), standardised."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    index = np.arange(len(y))
    train, rest = train_test_split(index, test_size=0.4, stratify=y, random_state=SPLIT_SEED)
    val, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=SPLIT_SEED)
    # One mean and standard deviation over all training pixels: per-pixel scaling would blow up
    # the border pixels that are almost always zero.
    x = (x - x[train].mean()) / x[train].std()

    def part(rows: np.ndarray) -> Split:
        images = torch.tensor(x[rows], dtype=torch.float32).reshape(-1, 1, 8, 8)
        return Split(images, torch.tensor(y[rows], dtype=torch.int64))

    return {"train": part(train), "val": part(val), "test": part(test)}


class CNN(nn.Module):
    """conv 1->16 3x3, act, conv 16->32 3x3, act, maxpool 2, linear 512->64, act, linear 64->10."""

    def __init__(self, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)
        self.act = ActivationFunction(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = nn.functional.max_pool2d(self.act(self.conv2(x)), 2)
        return self.fc2(self.act(self.fc1(x.flatten(1))))


class Block(nn.Module):
    """Pre-norm transformer block; the activation is the MLP's nonlinearity."""

    def __init__(self, dim: int, heads: int, hidden: int, activation: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = ActivationFunction(activation)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """2x2 patches (16 tokens) embedded by linear 4->32 + act, class token, learned positions,
    one pre-norm block (2 heads, MLP 32->64->32 with act), LayerNorm, linear 32->10.

    The activation also follows the patch embedding: with it only in the MLP, the residual stream
    and attention alone reach ~0.88 accuracy even with ``zero(x)``.
    """

    def __init__(self, activation: str, dim: int = 32, depth: int = 1, patch: int = 2):
        super().__init__()
        self.patch = patch
        n_tokens = (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.act = ActivationFunction(activation)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, 2, 2 * dim, activation) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        tokens = x.unfold(2, p, p).unfold(3, p, p).reshape(len(x), -1, p * p)
        x = self.act(self.embed(tokens))
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        x = self.blocks(x)
        return self.head(self.norm(x[:, 0]))


class ResBlock(nn.Module):
    def __init__(self, channels: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = ActivationFunction(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(x + self.bn2(self.conv2(h)))


class ResNet(nn.Module):
    """Stem conv 1->16 + BN + act, two residual blocks of 16 channels, global mean pool, linear."""

    def __init__(self, activation: str, channels: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = ActivationFunction(activation)
        self.blocks = nn.Sequential(ResBlock(channels, activation), ResBlock(channels, activation))
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.bn(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


MODELS = {"cnn": CNN, "vit": ViT, "resnet": ResNet}


def build_model(arch: str, activation: str, seed: int) -> nn.Module:
    """The architecture with ``activation``; its initial weights depend on ``seed`` only."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(MODELS)}")
    torch.manual_seed(seed)
    return MODELS[arch](activation)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """Accuracy and mean cross-entropy; a sample with any non-finite logit counts as wrong."""
    model.eval()
    logits = model(split.x)
    loss = nn.functional.cross_entropy(logits, split.y).item()
    finite = torch.isfinite(logits).all(dim=1)
    correct = (logits.argmax(dim=1) == split.y) & finite
    model.train()
    return correct.float().mean().item(), loss


def train_function(
    arch: str, expression: str, seed: int = MAIN_SEED, config: TrainConfig | None = None
) -> dict:
    """Train ``arch`` with the activation ``expression`` from scratch; return its metrics.

    Adam with a cosine learning-rate schedule, mini-batches drawn in a seed-fixed order. The
    training stops early, with ``diverged=True``, as soon as a mini-batch loss is NaN or infinite;
    such a run records the chance accuracy 0.1 for all three splits and NaN losses.
    """
    config = config or DEFAULT_CONFIGS[arch]
    data = digits_splits()
    start, cpu_start = time.perf_counter(), time.process_time()
    model = build_model(arch, expression, seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train = data["train"]
    steps_per_epoch = math.ceil(len(train.y) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )
    diverged = False
    best_val_acc, best_epoch = -1.0, 0
    epoch = 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train.y), generator=generator)
        for first in range(0, len(order), config.batch_size):
            rows = order[first : first + config.batch_size]
            loss = nn.functional.cross_entropy(model(train.x[rows]), train.y[rows])
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if diverged:
            break
        val_acc = evaluate(model, data["val"])[0]
        if val_acc > best_val_acc:
            best_val_acc, best_epoch = val_acc, epoch
    if diverged:
        nan = float("nan")
        metrics = {
            "train_acc": CHANCE_ACCURACY,
            "train_loss": nan,
            "val_acc": CHANCE_ACCURACY,
            "val_loss": nan,
            "test_acc": CHANCE_ACCURACY,
            "test_loss": nan,
            "best_val_acc": max(best_val_acc, CHANCE_ACCURACY),
            "best_epoch": best_epoch,
        }
    else:
        metrics = {}
        for name in ("train", "val", "test"):
            metrics[f"{name}_acc"], metrics[f"{name}_loss"] = evaluate(model, data[name])
        metrics["best_val_acc"] = best_val_acc
        metrics["best_epoch"] = best_epoch
    metrics["epochs"] = epoch
    metrics["diverged"] = int(diverged)
    metrics["seconds"] = time.perf_counter() - start
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    return metrics
