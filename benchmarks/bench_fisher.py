"""Time of the Fisher-spectrum features per candidate, next to one training step.

(a) a small CNN on scikit-learn's digits (8x8 images, batch 128) over the 2,918 functions of
``binary(unary(x),unary(x))``; (b) timm resnet18 (random weights) at 64x64, batch 32, over 20
functions. Targets on 2 cores: (a) at most 2 training steps per candidate, (b) at most 10.
Probe and training steps run in alternating rounds, with torch's threads (default: one per core).
(c) the wall time of the Fisher features of the whole paper space for timm resnet18 at 32x32,
batch 32, built as ``aquasurf optimize`` builds a ``model()`` file's model (activation sites
found once, then swapped per candidate stack). Target on 2 cores: 10 minutes.

Usage: ``python benchmarks/bench_fisher.py [--n 2918] [--n-resnet 20] [--n-space 2918]
[--threads N]`` (``--n-space 0`` skips (c), which takes minutes).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch import nn

from optuna_aquasurf import PAPER_UNARY, ActivationFunction, SearchSpace
from optuna_aquasurf.features import FisherProbe


class DigitsCNN(nn.Module):
    def __init__(self, activation: nn.Module):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3),
            activation,
            nn.Conv2d(16, 32, 3),
            activation,
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def resnet18(activation: nn.Module) -> nn.Module:
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, activation)
    return model


def space_wall_time(expressions: list[str]) -> None:
    """(c): the Fisher features of ``expressions`` for a timm resnet18 ``model()`` file."""
    import timm

    from optuna_aquasurf.cli._userfile import SwappedModel

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    build = SwappedModel(lambda: timm.create_model("resnet18", num_classes=10), lambda: (images,))
    start = time.perf_counter()
    probe = FisherProbe(build, images, labels, seed=0, device="cpu", progress=False)
    diverged = 0
    for first in range(0, len(expressions), 512):
        chunk = expressions[first : first + 512]
        diverged += int(probe.features(chunk, return_diverged=True)[1].sum())
        print(f"  {first + len(chunk)} candidates: {time.perf_counter() - start:.0f} s", flush=True)
    minutes = (time.perf_counter() - start) / 60
    verdict = "meets" if minutes <= 10 else "MISSES"
    print(
        f"(c) timm resnet18 model() file, 32x32, batch 32: {len(expressions)} candidates "
        f"({diverged} diverged, {probe.stack_size} per pass) in {minutes:.1f} min "
        f"(target <= 10: {verdict})"
    )


def digits_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images[:size], dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(data.target[:size])


def step_time(model: nn.Module, inputs, targets, steps: int) -> float:
    """Seconds of ``steps`` SGD steps (forward, backward, update) on the batch, after a warm-up."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def seeded(build, expression: str) -> nn.Module:
    torch.manual_seed(0)
    return build(ActivationFunction(expression))


def run(title, build, inputs, targets, expressions, target_ratio, steps, sampled):
    """Per-candidate probe time against a training step, measured in alternating rounds."""
    probe = FisherProbe(build, inputs, targets, seed=0, device="cpu", progress=False)
    probe.features(expressions[:2])  # warm-up and the reference build
    relu = seeded(build, "relu(x)")
    probe_time = relu_time = 0.0
    diverged = 0
    rounds = min(5, len(expressions))
    for r in range(rounds):
        chunk = expressions[r * len(expressions) // rounds : (r + 1) * len(expressions) // rounds]
        start = time.perf_counter()
        diverged += int(probe.features(chunk, return_diverged=True)[1].sum())
        probe_time += time.perf_counter() - start
        relu_time += step_time(relu, inputs, targets, steps)
    per_candidate = probe_time / len(expressions)
    relu_step = relu_time / (rounds * steps)
    chosen = expressions[:: max(1, len(expressions) // sampled)][:sampled]
    candidate_step = sum(step_time(seeded(build, e), inputs, targets, 1) for e in chosen)
    candidate_step /= len(chosen)
    ratio = per_candidate / relu_step
    verdict = "meets" if ratio <= target_ratio else "MISSES"
    print(
        f"{title}: {len(expressions)} candidates ({diverged} diverged), "
        f"features of length {probe.feature_length}\n"
        f"  per candidate {per_candidate * 1e3:9.2f} ms\n"
        f"  training step {relu_step * 1e3:9.2f} ms (relu)      ratio {ratio:5.2f} "
        f"(target <= {target_ratio}: {verdict})\n"
        f"  training step {candidate_step * 1e3:9.2f} ms (mean of {len(chosen)} candidates) "
        f"ratio {per_candidate / candidate_step:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="digits candidates (default: all)")
    parser.add_argument("--n-resnet", type=int, default=20, help="resnet18 candidates")
    parser.add_argument("--n-space", type=int, default=None, help="(c) candidates (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)
    expressions = space.expressions
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, space of {len(space)} functions")

    inputs, targets = digits_batch(128)
    digits = expressions[: args.n]
    run("(a) digits CNN, batch 128", DigitsCNN, inputs, targets, digits, 2, steps=50, sampled=20)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory of the process after (a): {peak:.0f} MiB")

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 64, 64, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    stride = max(1, len(expressions) // args.n_resnet)
    chosen = expressions[::stride][: args.n_resnet]
    run("(b) timm resnet18, 64x64, batch 32", resnet18, images, labels, chosen, 10, 2, sampled=3)
    if args.n_space != 0:
        space_wall_time(expressions[: args.n_space])


if __name__ == "__main__":
    main()
