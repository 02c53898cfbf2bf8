"""Load the user's model file and check it against the contract of ``aquasurf optimize``."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from optuna_aquasurf.cli._console import UserError

CONTRACT = """\
A model file for `aquasurf optimize` defines
  build_model(activation) -> nn.Module
      your network with `activation` (an nn.Module) at its activation sites,
    or model() -> nn.Module
      any model (timm, torchvision...); its activations are replaced each
      trial (optuna_aquasurf.integrations), found once with the inputs of
      fisher_batch() or data();
  train(model, trial, device) -> float
      trains the model (already on `device`) and returns its validation score;
      may call trial.report/should_prune,
    or data() -> (train_loader, val_loader)
      batches of (inputs, class labels) for the built-in trainer (AdamW,
      cosine schedule, validation accuracy);
and optionally
  fisher_batch() -> (inputs, targets)
      one batch: the map of functions then also uses the Fisher spectrum of
      your model,
  DIRECTION = "maximize"
      or "minimize" (with train()),
  METRIC = "top1"
      the name of train()'s score (default "score"; the built-in trainer's
      is "accuracy"), shown by optuna-dashboard,
  SPACE = ["mul(x,unary(x))", "relu(x)"]
      schemas (unary, binary, n-ary range over all built-in operators) or
      expressions (default: the paper's 2,918),
  SEARCH = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
      other hyperparameters (optuna.distributions; read them from
      trial.params),
  EPOCHS = 10, LR = 1e-3, WEIGHT_DECAY = 0.01
      settings of the built-in trainer (SEARCH may tune "epochs", "lr" and
      "weight_decay" instead)."""

#: Settings of the built-in trainer, with their defaults.
TRAINER_DEFAULTS = {"epochs": 10, "lr": 1e-3, "weight_decay": 0.01}
#: Names of this package's own files, hidden from the tracebacks of the user's code.
_OWN_FILES = (str(Path(__file__).parent), "<frozen importlib", str(Path(importlib.__file__).parent))


@dataclass
class UserFile:
    """A loaded model file: what it defines, checked.

    Attributes
    ----------
    path
        The file.
    build_model
        The file's ``build_model(activation)``, or None.
    model
        The file's ``model()``, or None.
    train
        The file's ``train(model, trial, device)``, or None for the built-in trainer.
    data
        The file's ``data()``, used when ``train`` is None.
    fisher_batch
        The file's ``fisher_batch()``, or None.
    direction
        ``"maximize"`` or ``"minimize"``.
    metric
        The name of the score: ``METRIC``, else ``"score"`` (``train()``'s) or ``"accuracy"``
        (the built-in trainer's).
    space
        ``SPACE``: schemas or expressions, or None for the paper's space.
    search
        ``SEARCH``: other hyperparameters, name -> optuna distribution.
    trainer
        Settings of the built-in trainer: ``epochs``, ``lr``, ``weight_decay``.
    """

    path: Path
    build_model: Callable[[Any], Any] | None
    model: Callable[[], Any] | None
    train: Callable[..., Any] | None
    data: Callable[[], Any] | None
    fisher_batch: Callable[[], Any] | None
    direction: str
    metric: str
    space: list[str] | None
    search: dict[str, Any]
    trainer: dict[str, float]

    @functools.cached_property
    def build(self) -> Callable[[Any], Any]:
        """``build(activation) -> nn.Module``: ``build_model``, or ``model()`` with its
        activations swapped (:class:`SwappedModel`, sites found with :meth:`example_input`)."""
        if self.build_model is not None:
            return self.build_model
        return SwappedModel(self.model, self.example_input)

    @functools.cached_property
    def fisher_data(self) -> tuple[Any, Any]:
        """``fisher_batch()``, called once: (inputs, targets)."""
        return _pair(self.fisher_batch(), "fisher_batch() must return (inputs, targets)")

    @property
    def example_source(self) -> str:
        """Where :meth:`example_input` comes from, for messages."""
        if self.fisher_batch is not None:
            return "fisher_batch()'s inputs"
        return "the first batch of data()"

    def example_input(self) -> tuple[Any, ...]:
        """Two examples of the model's input, as a tuple of ``forward`` arguments: from
        ``fisher_batch()``, else from the first training batch of ``data()``.

        Raises
        ------
        UserError
            When neither gives an input batch.
        """
        problem = f"{self.example_source} in {self.path} gave no input batch for model()"
        with errors_of_user_code(problem):
            if self.fisher_batch is not None:
                inputs = self.fisher_data[0]
            else:
                inputs = next(iter(self.loaders[0]))[0]
            example = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
            return tuple(x[:2] if hasattr(x, "shape") and x.ndim else x for x in example)

    @functools.cached_property
    def loaders(self) -> tuple[Any, Any]:
        """``data()``, called once: (train_loader, val_loader)."""
        return _pair(self.data(), "data() must return (train_loader, val_loader)")

    def probe(self, seed: int, device):
        """A :class:`~optuna_aquasurf.features.FisherProbe` of the model, or None without
        ``fisher_batch``."""
        if self.fisher_batch is None:
            return None
        from optuna_aquasurf.features import FisherProbe

        with errors_of_user_code(f"fisher_batch() in {self.path} failed"):
            inputs, targets = self.fisher_data
            return FisherProbe(
                self.build, inputs, targets, seed=seed, device=device, progress=False
            )


def load_user_file(path: Path) -> UserFile:
    """Import the model file at ``path`` and check what it defines.

    The file's folder goes first on ``sys.path``, as with ``python FILE``, so that it can import
    its neighbours.

    Raises
    ------
    UserError
        For a missing file, a syntax error, an error while importing it, or definitions that
        break the contract (the message then shows :data:`CONTRACT`).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise UserError(f"The model file {path} {what}.\n\n{CONTRACT}")
    if path.suffix != ".py":
        raise UserError(f"The model file {path} must be a Python file (.py).")
    module = _import(path)
    functions = {
        name: _function(module, name, path)
        for name in ("build_model", "model", "train", "data", "fisher_batch")
    }
    missing = []
    if functions["build_model"] is None and functions["model"] is None:
        missing.append("build_model(activation) or model()")
    if functions["train"] is None and functions["data"] is None:
        missing.append("train(model, trial, device) or data()")
    if missing:
        raise UserError(f"{path} does not define {' nor '.join(missing)}.\n\n{CONTRACT}")
    if functions["build_model"] is None and not (functions["fisher_batch"] or functions["data"]):
        raise UserError(
            f"{path} defines model() but neither fisher_batch() nor data(): aquasurf finds the "
            "activations of model() with a forward pass of your own inputs, from one of them."
            f"\n\n{CONTRACT}"
        )
    direction = getattr(module, "DIRECTION", "maximize")
    if direction not in ("maximize", "minimize"):
        raise UserError(f"DIRECTION in {path} must be 'maximize' or 'minimize', not {direction!r}.")
    if functions["train"] is None and direction != "maximize":
        raise UserError(
            f"{path} sets DIRECTION = 'minimize' but has no train(): the built-in trainer "
            "measures validation accuracy (maximize). Define train() to minimize your own score."
        )
    return UserFile(
        path=path,
        metric=_metric(module, path, has_train=functions["train"] is not None),
        build_model=functions["build_model"],
        model=functions["model"],
        train=functions["train"],
        data=functions["data"],
        fisher_batch=functions["fisher_batch"],
        direction=direction,
        space=_space(module, path),
        search=_search(module, path),
        trainer=_trainer_settings(module, path),
    )


class SwappedModel:
    """``model()`` with the given activation at its main activation sites.

    The sites are found once, at the first call, with a plain activation in place and one
    forward pass of ``example_input()``
    (:func:`~optuna_aquasurf.integrations.find_activation_sites`); every later model reuses them
    without a forward pass, whatever activation it gets (a stack of candidates included).

    Parameters
    ----------
    model
        The file's ``model()``.
    example_input
        Returns the arguments of one forward pass (a tuple).
    """

    def __init__(self, model: Callable[[], Any], example_input: Callable[[], tuple]):
        self.model = model
        self.example_input = example_input
        self._sites = None
        self._lock = threading.Lock()

    def __call__(self, activation):
        built = self._built()
        swapped, _ = self.sites(built).apply(built, activation, inplace=True)
        return swapped

    def sites(self, built=None):
        """The :class:`~optuna_aquasurf.integrations.ActivationSites` of ``model()``, found in
        ``built`` (a new ``model()`` if None) the first time."""
        from optuna_aquasurf.integrations import find_activation_sites

        with self._lock:
            if self._sites is None:
                built = self._built() if built is None else built
                self._sites = find_activation_sites(built, example_input=self.example_input())
            return self._sites

    def _built(self):
        from torch import nn

        built = self.model()
        if not isinstance(built, nn.Module):
            raise TypeError(f"model() returned {type(built).__name__}, not an nn.Module")
        return built


def user_traceback(error: BaseException) -> str:
    """The traceback of an exception raised in the user's code, without this package's frames."""
    frames = traceback.extract_tb(error.__traceback__)
    kept = [f for f in frames if not f.filename.startswith(_OWN_FILES)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(kept or frames)]
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip()


@contextlib.contextmanager
def errors_of_user_code(problem: str) -> Iterator[None]:
    """Turn an exception raised in the body (in the user's code) into a :class:`UserError`:
    ``problem``, then the user's traceback. A UserError passes as it is."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{problem}:\n{user_traceback(error)}") from None


def _pair(value: Any, requirement: str) -> tuple[Any, Any]:
    """``value`` as a tuple of two; TypeError saying ``requirement`` otherwise."""
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise TypeError(f"{requirement}, got {type(value).__name__}")
    return tuple(value)


def _import(path: Path) -> ModuleType:
    name = "_aquasurf_user_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # lets pickle and dataclasses find the file's definitions
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        where = f"{error.filename}, line {error.lineno}"
        text = (error.text or "").rstrip("\n")
        caret = " " * max((error.offset or 1) - 1, 0) + "^"
        raise UserError(f"Syntax error in {where}: {error.msg}\n  {text}\n  {caret}") from None
    except Exception as error:
        del sys.modules[name]
        raise UserError(f"Importing {path} failed:\n{user_traceback(error)}") from None
    return module


def _function(module: ModuleType, name: str, path: Path) -> Callable[..., Any] | None:
    value = getattr(module, name, None)
    if value is not None and not callable(value):
        raise UserError(
            f"{name} in {path} must be a function, not {type(value).__name__}.\n\n{CONTRACT}"
        )
    return value


def _metric(module: ModuleType, path: Path, has_train: bool) -> str:
    if not hasattr(module, "METRIC"):
        return "score" if has_train else "accuracy"
    metric = module.METRIC
    if not has_train:
        raise UserError(
            f"{path} sets METRIC but has no train(): the built-in trainer's score is accuracy. "
            "Define train() to return your own metric."
        )
    if not isinstance(metric, str) or not metric.strip() or metric == "cost":
        raise UserError(
            f"METRIC in {path} must be a non-empty name other than 'cost', not {metric!r}."
        )
    return metric


def _space(module: ModuleType, path: Path) -> list[str] | None:
    space = getattr(module, "SPACE", None)
    if space is None:
        return None
    if isinstance(space, str):
        space = [space]
    if not (isinstance(space, list | tuple) and space and all(isinstance(s, str) for s in space)):
        raise UserError(
            f"SPACE in {path} must be a non-empty list of schemas or expressions (strings), "
            f'such as ["binary(unary(x),unary(x))"] or ["relu(x)", "mul(x,tanh(x))"].'
        )
    return list(space)


def _search(module: ModuleType, path: Path) -> dict[str, Any]:
    search = getattr(module, "SEARCH", None)
    if search is None:
        return {}
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    kinds = (FloatDistribution, IntDistribution, CategoricalDistribution)
    if not isinstance(search, dict):
        raise UserError(f"SEARCH in {path} must be a dict: name -> optuna distribution.")
    for name, distribution in search.items():
        if not isinstance(name, str) or name == "activation":
            raise UserError(f"SEARCH in {path}: {name!r} cannot be a parameter name.")
        if not isinstance(distribution, kinds):
            raise UserError(
                f"SEARCH[{name!r}] in {path} must be an optuna FloatDistribution, "
                f"IntDistribution or CategoricalDistribution, not {type(distribution).__name__}."
            )
    return dict(search)


def _trainer_settings(module: ModuleType, path: Path) -> dict[str, float]:
    settings = {}
    for key, default in TRAINER_DEFAULTS.items():
        value = getattr(module, key.upper(), default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UserError(f"{key.upper()} in {path} must be a non-negative number.")
        settings[key] = value
    if settings["epochs"] < 1 or settings["epochs"] != int(settings["epochs"]):
        raise UserError(f"EPOCHS in {path} must be a positive whole number.")
    return settings
