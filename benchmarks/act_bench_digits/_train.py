"""Data, architectures and the training run of Act-Bench-Digits (one function, one architecture).

Three architectures classify scikit-learn's digits (score: accuracy); ``regression`` fits an MLP to
Friedman #1 (``sklearn.datasets.make_friedman1``; score: -log10 of the mean squared error of the
standardised target, so 0 is the score of predicting the training mean).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from benchmarks.act_bench_digits._files import MAIN_SEED, metric_of
from optuna_aquasurf import ActivationFunction

#: Seed of the stratified train/validation/test split (fixed for every run and architecture).
SPLIT_SEED = 0
#: Accuracy recorded for a run whose training loss became NaN or infinite (10 balanced classes).
CHANCE_ACCURACY = 0.1
#: Regression score recorded for such a run, and the floor of every regression score: that of
#: predicting the mean (mean squared error 1 on the standardised target).
MEAN_PREDICTOR_SCORE = 0.0
#: Friedman #1: samples, input features (5 of them unused by the target) and noise std.
FRIEDMAN_SAMPLES, FRIEDMAN_FEATURES, FRIEDMAN_NOISE = 1500, 10, 0.1


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
    "regression": TrainConfig(epochs=30, batch_size=64, lr=3e-3),
}


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # digits: (n, 1, 8, 8); Friedman #1: (n, 10); standardised on the training part
    y: torch.Tensor  # digits: (n,) int64; Friedman #1: (n, 1) float32, standardised


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


@lru_cache(maxsize=1)
def friedman_splits() -> dict[str, Split]:
    """Friedman #1 (seed 0), split 60/20/20 (seed 0); inputs and target standardised per column
    with the training part's mean and std."""
    from sklearn.datasets import make_friedman1
    from sklearn.model_selection import train_test_split

    x, y = make_friedman1(
        FRIEDMAN_SAMPLES, FRIEDMAN_FEATURES, noise=FRIEDMAN_NOISE, random_state=SPLIT_SEED
    )
    index = np.arange(len(y))
    train, rest = train_test_split(index, test_size=0.4, random_state=SPLIT_SEED)
    val, test = train_test_split(rest, test_size=0.5, random_state=SPLIT_SEED)
    x = (x - x[train].mean(axis=0)) / x[train].std(axis=0)
    y = (y - y[train].mean()) / y[train].std()

    def part(rows: np.ndarray) -> Split:
        return Split(
            torch.tensor(x[rows], dtype=torch.float32),
            torch.tensor(y[rows], dtype=torch.float32).reshape(-1, 1),
        )

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


class MLP(nn.Module):
    """linear 10->64, act, linear 64->64, act, linear 64->1."""

    def __init__(self, activation: str, hidden: int = 64):
        super().__init__()
        self.fc1 = nn.Linear(FRIEDMAN_FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)
        self.act = ActivationFunction(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


MODELS = {"cnn": CNN, "vit": ViT, "resnet": ResNet, "regression": MLP}


def build_model(arch: str, activation: str, seed: int) -> nn.Module:
    """The architecture with ``activation``; its initial weights depend on ``seed`` only."""
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(MODELS)}")
    torch.manual_seed(seed)
    return MODELS[arch](activation)


def accuracy(outputs: torch.Tensor, y: torch.Tensor) -> float:
    """A sample with any non-finite logit counts as wrong."""
    correct = (outputs.argmax(dim=1) == y) & torch.isfinite(outputs).all(dim=1)
    return correct.float().mean().item()


def regression_score(outputs: torch.Tensor, y: torch.Tensor) -> float:
    """-log10 of the mean squared error, a non-finite prediction replaced by the mean (0); floored
    at the mean predictor's score."""
    outputs = torch.where(torch.isfinite(outputs), outputs, torch.zeros_like(outputs))
    mse = nn.functional.mse_loss(outputs, y).item()
    return max(MEAN_PREDICTOR_SCORE, -math.log10(max(mse, 1e-12)))


@dataclass(frozen=True)
class Task:
    """What an architecture learns: its data, training loss, score and the score of a divergence."""

    splits: Callable[[], dict[str, Split]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[torch.Tensor, torch.Tensor], float]
    diverged_score: float


CLASSIFICATION = Task(digits_splits, nn.functional.cross_entropy, accuracy, CHANCE_ACCURACY)
REGRESSION = Task(friedman_splits, nn.functional.mse_loss, regression_score, MEAN_PREDICTOR_SCORE)


def task_of(arch: str) -> Task:
    return REGRESSION if metric_of(arch) == "score" else CLASSIFICATION


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, task: Task = CLASSIFICATION) -> tuple[float, float]:
    """The task's score and mean loss on one split."""
    model.eval()
    outputs = model(split.x)
    loss = task.loss(outputs, split.y).item()
    model.train()
    return task.score(outputs, split.y), loss


def train_function(
    arch: str, expression: str, seed: int = MAIN_SEED, config: TrainConfig | None = None
) -> dict:
    """Train ``arch`` with the activation ``expression`` from scratch; return its metrics.

    Adam with a cosine learning-rate schedule, mini-batches drawn in a seed-fixed order. The
    training stops early, with ``diverged=True``, as soon as a mini-batch loss is NaN or infinite;
    such a run records the task's ``diverged_score`` (accuracy 0.1, regression score 0) for all
    three splits and NaN losses.
    """
    config = config or DEFAULT_CONFIGS[arch]
    task, metric = task_of(arch), metric_of(arch)
    data = task.splits()
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
    best_val, best_epoch = -math.inf, 0
    epoch = 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train.y), generator=generator)
        for first in range(0, len(order), config.batch_size):
            rows = order[first : first + config.batch_size]
            loss = task.loss(model(train.x[rows]), train.y[rows])
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if diverged:
            break
        val = evaluate(model, data["val"], task)[0]
        if val > best_val:
            best_val, best_epoch = val, epoch
    if diverged:
        nan = float("nan")
        metrics = {}
        for name in ("train", "val", "test"):
            metrics[f"{name}_{metric}"], metrics[f"{name}_loss"] = task.diverged_score, nan
        metrics[f"best_val_{metric}"] = max(best_val, task.diverged_score)
    else:
        metrics = {}
        for name in ("train", "val", "test"):
            metrics[f"{name}_{metric}"], metrics[f"{name}_loss"] = evaluate(model, data[name], task)
        metrics[f"best_val_{metric}"] = best_val
    metrics["best_epoch"] = best_epoch
    metrics["epochs"] = epoch
    metrics["diverged"] = int(diverged)
    metrics["seconds"] = time.perf_counter() - start
    metrics["cpu_seconds"] = time.process_time() - cpu_start
    return metrics
