"""Search the activation function closest to GELU on [-3, 3] among 8 candidates.

In a real search the objective builds and trains your network with ``act`` (an ``nn.Module``)
and returns its validation score.
"""

import optuna
import optunahub
import torch

module = optunahub.load_module(package="samplers/aquasurf")
X = torch.linspace(-3, 3, 101)


def objective(trial: optuna.Trial) -> float:
    act = module.suggest_activation(trial)
    return float((act(X) - torch.nn.functional.gelu(X)).abs().mean())


space = ["relu(x)", "tanh(x)", "swish(x)", "elu(x)", "softplus(x)", "abs(x)", "erf(x)", "x"]
sampler = module.AquaSurfSampler(space, baselines=["relu(x)"], seed=0)
study = optuna.create_study(direction="minimize", sampler=sampler)
study.optimize(objective, n_trials=5)
print(study.best_trial.user_attrs["activation"], study.best_value)
