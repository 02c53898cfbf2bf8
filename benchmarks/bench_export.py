"""Training steps of timm resnet18 with exported activation modules, unfused and fused.

The best functions of the four Act-Bench-Digits tables (``--top`` per table, by the table's main
score; ties in space order) are written by ``aquasurf export``'s code into module files and put
at every activation site of a timm resnet18 (random weights, 10 classes, 32x32 inputs). For each
function the script times training steps (forward, backward, SGD step) of its model beside the
same model with the exported ``relu(x)``: unfused (``Activation(fused=False)``) against unfused
relu, fused (``torch.compile``) against fused relu, in alternating rounds so that both see the
same machine load. Each ratio is the median step of the function over relu's median step;
``fused/unfused relu`` compares the fused function with the unfused relu (what fusing gains over
a model without torch.compile).
Compile seconds: the first fused step less the median one (inductor's cache starts empty, as on
a user's first run).

Usage, from the repository root: ``python -m benchmarks.bench_export [--top 1] [--batch 64]
[--steps 15] [--threads N] [--out benchmarks/results/bench_export.jsonl]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from benchmarks.act_bench_digits import load_act_bench_digits
from optuna_aquasurf.cli._export import write_module
from optuna_aquasurf.integrations import ActivationSites, find_activation_sites

TABLES = ("cnn", "vit", "resnet", "regression")
#: Input size: images of 3 x 32 x 32.
IMAGE = (3, 32, 32)
#: Untimed steps of every model before its timed ones.
WARMUP = 2


def best_functions(top: int) -> list[tuple[str, str]]:
    """``(table, expression)`` of the ``top`` best functions of each table by its main score."""
    best = []
    for arch in TABLES:
        table = load_act_bench_digits(arch)
        order = np.argsort(-table.score, kind="stable")[:top]
        best += [(arch, table.expressions[i]) for i in order]
    return best


def export(expression: str, folder: Path, name: str) -> ModuleType:
    """The module file of ``expression``, written by ``aquasurf export``'s code and imported."""
    path = folder / f"{name}.py"
    write_module(path, expression, "Written by benchmarks/bench_export.py.")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Trainer:
    """One resnet18 with an activation at its sites, and its SGD training step on a fixed
    batch."""

    def __init__(self, sites: ActivationSites, base: nn.Module, activation: nn.Module, batch):
        self.model, _ = sites.apply(base, activation)
        self.model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.images, self.labels = batch

    def step(self) -> float:
        """Seconds of one training step."""
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(self.model(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def median_steps(trainers: list[Trainer], steps: int) -> list[float]:
    """The median step seconds of each trainer, their steps taken in alternating rounds."""
    for _ in range(WARMUP):
        for trainer in trainers:
            trainer.step()
    seconds = [[trainer.step() for trainer in trainers] for _ in range(steps)]
    return [statistics.median(column) for column in zip(*seconds)]


def measure(
    expression: str,
    module: ModuleType,
    relu: tuple[Trainer, Trainer],
    make: Callable[[nn.Module], Trainer],
    steps: int,
) -> dict:
    """The row of one function: its cost and its step ratios to relu's, unfused and fused.

    ``relu`` holds the unfused and the fused relu's trainers, ``make`` builds a trainer of the
    model with another activation."""
    unfused = make(module.Activation(fused=False))
    fused = make(module.Activation())
    first = fused.step()
    times = median_steps([relu[0], unfused, relu[1], fused], steps)
    return {
        "expression": expression,
        "cost": module.COST,
        "unfused_ratio": times[1] / times[0],
        "fused_ratio": times[3] / times[2],
        "fused_over_unfused_relu": times[3] / times[0],
        "compile_seconds": first - times[3],
        "relu_unfused_ms": times[0] * 1e3,
        "relu_fused_ms": times[2] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=1, help="functions per table")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per model")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_export.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # before any compilation: inductor's kernels use it too
    torch.manual_seed(0)
    batch = (torch.randn(args.batch, *IMAGE), torch.randint(0, 10, (args.batch,)))

    import timm

    base = timm.create_model("resnet18", pretrained=False, num_classes=10)
    sites = find_activation_sites(base, example_input=batch[0][:2])

    def make(activation: nn.Module) -> Trainer:
        return Trainer(sites, base, activation, batch)

    with tempfile.TemporaryDirectory() as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(folder) / "inductor")
        module = export("relu(x)", Path(folder), "bench_relu")
        relu = make(module.Activation(fused=False)), make(module.Activation())
        first = relu[1].step()
        eager, fused = median_steps(list(relu), args.steps)
        print(
            f"timm resnet18, 32x32, batch {args.batch}, {args.threads} threads, torch "
            f"{torch.__version__}, {sites.report.counts['replaced']} activations swapped; "
            f"median of {args.steps} steps. relu step: unfused {eager * 1e3:.1f} ms, fused "
            f"{fused * 1e3:.1f} ms (first fused step {first:.1f} s: the process's first compile)"
        )
        print(
            f"{'table':>10}  {'function':<32} {'COST':>6} {'unfused':>8} {'fused':>8} "
            f"{'fused/unfused relu':>18} {'compile s':>9}"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w") as out:
            for number, (arch, expression) in enumerate(best_functions(args.top)):
                module = export(expression, Path(folder), f"bench_act{number}")
                row = {"table": arch, **measure(expression, module, relu, make, args.steps)}
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(
                    f"{arch:>10}  {expression:<32} {row['cost']:>6.2f} "
                    f"{row['unfused_ratio']:>8.2f} {row['fused_ratio']:>8.2f} "
                    f"{row['fused_over_unfused_relu']:>18.2f} {row['compile_seconds']:>9.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
