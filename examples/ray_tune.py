"""Search activation functions with Ray Tune: the sampler in Ray's driver, each trial trained by
a Ray worker, with one GPU per trial where there are GPUs.

    python examples/ray_tune.py --samples 50 --concurrent 4 --gpus-per-trial 1
    python examples/ray_tune.py --restore      # after Ctrl+C, or a crash of the driver

Ray Tune's ``OptunaSearch`` calls ``study.ask()`` and ``define_by_run(trial)`` in the driver
process: the sampler lives there. It picks each trial's function (never one that another trial
trains or trained) and computes the Fisher features of the probe once, there; Ray's workers
receive only each trial's config, ``{"activation": expression, "lr": ...}``, and build
``ActivationFunction(config["activation"])``.

The study is a journal file beside Ray's experiment folder, and the Fisher features are kept in
a folder beside that file (``aquasurf.journal.aquasurf/``): a restored Tuner goes on without
repeating a function and without computing the features again. The model is a small MLP on
scikit-learn's 8x8 digits; put yours in ``build_model`` and ``train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
import ray
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from sklearn.datasets import load_digits
from torch import nn

from optuna_aquasurf import (
    PAPER_UNARY,
    ActivationFunction,
    AquaSurfSampler,
    SearchSpace,
    suggest_activation,
)
from optuna_aquasurf.features import FisherProbe


def build_model(activation: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), activation, nn.Linear(32, 10))


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """1,437 training or 360 validation images (a fixed split), flattened."""
    images, labels = load_digits(return_X_y=True)
    images = torch.tensor(images, dtype=torch.float32) / 16.0
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    part = order[:1437] if split == "train" else order[1437:]
    return images[part], torch.tensor(labels)[part]


def define_by_run(trial: optuna.Trial) -> dict:
    """Runs in the driver: the activation (and the learning rate) of one trial."""
    act = suggest_activation(trial)
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)
    return {"activation": act.expression}


def train(config: dict) -> None:
    """Runs in a Ray worker: trains the config's activation, reporting validation accuracy."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build_model(ActivationFunction(config["activation"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    (x, y), (x_val, y_val) = [(t.to(device) for t in digits(s)) for s in ("train", "val")]
    for _ in range(config["epochs"]):
        for batch in torch.randperm(len(y), device=device).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        tune.report({"accuracy": accuracy})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50, help="trials")
    parser.add_argument("--concurrent", type=int, default=4, help="trials at once")
    parser.add_argument("--gpus-per-trial", type=float, default=0)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs for Ray (default: all)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--unary", default=",".join(PAPER_UNARY), help="the space's operators")
    parser.add_argument("--folder", type=Path, default=Path("aquasurf_ray"))
    parser.add_argument("--restore", action="store_true", help="go on with an interrupted run")
    args = parser.parse_args()

    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=args.cpus, include_dashboard=False)
    trainable = tune.with_resources(train, {"cpu": 1, "gpu": args.gpus_per_trial})
    if args.restore:
        tuner = tune.Tuner.restore(str(folder / "aquasurf"), trainable=trainable)
    else:
        space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=args.unary.split(","))
        images, labels = digits("train")
        probe = FisherProbe(build_model, images[:64], labels[:64], progress=False)
        searcher = OptunaSearch(
            space=define_by_run,
            sampler=AquaSurfSampler(space, probe=probe, seed=0),
            metric="accuracy",
            mode="max",
            storage=JournalStorage(JournalFileBackend(str(folder / "aquasurf.journal"))),
            study_name="aquasurf",
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"epochs": args.epochs},
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=args.samples,
                max_concurrent_trials=args.concurrent,
            ),
            run_config=tune.RunConfig(name="aquasurf", storage_path=str(folder)),
        )
    results = tuner.fit()
    best = results.get_best_result(metric="accuracy", mode="max")
    print(f"best: {best.config['activation']}, accuracy {best.metrics['accuracy']:.3f}")


if __name__ == "__main__":
    main()
