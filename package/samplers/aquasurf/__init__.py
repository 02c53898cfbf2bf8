"""AQuaSurF's search of activation functions as an Optuna sampler, from the installed
``optuna-aquasurf`` package (see requirements.txt): this package re-exports it."""

from optuna_aquasurf import AquaSurfSampler, suggest_activation

__all__ = ["AquaSurfSampler", "suggest_activation"]
