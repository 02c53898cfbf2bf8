"""``aquasurf plot``: the map of the space, the best-so-far curve, score against cost and the
confirmed functions against the baseline, as PNG and HTML files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from optuna_aquasurf import AquaSurfSampler
from optuna_aquasurf._intervals import mean_interval
from optuna_aquasurf.cli._console import UserError
from optuna_aquasurf.cli._trials import counts_toward_target
from optuna_aquasurf.cli._views import (
    Function,
    baseline_function,
    cost_front,
    functions,
    score_is_maximized,
    score_of,
)

#: The expression of relu as the sampler's baseline: where relu is marked on the cost plot.
RELU = "relu(x)"
#: Colours of the confirmed functions and of their baseline (matplotlib's and plotly's first two).
FUNCTION_COLOR, BASELINE_COLOR = "#1f77b4", "#ff7f0e"


@dataclass
class Evaluated:
    """The finished trials: map coordinates of their functions, measured scores (NaN when
    failed or pruned), expressions and trial numbers, in trial order."""

    xy: np.ndarray
    score: np.ndarray
    expression: list[str]
    trial: list[int]


@dataclass
class Costed:
    """Functions of known cost: their costs (relu passes), mean scores, numbers of scores,
    expressions and best trials' numbers."""

    cost: np.ndarray
    score: np.ndarray
    n: list[int]
    expression: list[str]
    trial: list[int]

    @classmethod
    def of(cls, costed: list[Function]) -> Costed:
        return cls(
            cost=np.array([f.cost for f in costed], dtype=float),
            score=np.array([f.mean for f in costed], dtype=float),
            n=[len(f.trials) for f in costed],
            expression=[f.expression for f in costed],
            trial=[f.best.number for f in costed],
        )

    def labels(self) -> list[str]:
        """Each function's hover text: its trial (best trial and mean once it has several
        scores), score and cost."""
        return [
            f"trial {t}: {e}<br>score {s:.4f}, cost {c:.2f}x relu"
            if n == 1
            else f"best trial {t}: {e}<br>mean {s:.4f} of {n} scores, cost {c:.2f}x relu"
            for t, e, s, n, c in zip(self.trial, self.expression, self.score, self.n, self.cost)
        ]


@dataclass
class Confirmed:
    """Functions of 2 scores or more, best mean first: expressions, numbers of scores, mean
    scores, the bounds of the 95% intervals of those means, and which one is the baseline."""

    expression: list[str]
    n: list[int]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    is_baseline: np.ndarray

    @classmethod
    def of(cls, confirmed: list[Function], baseline: str | None) -> Confirmed:
        bounds = np.array([mean_interval(f.scores) for f in confirmed], dtype=float)
        return cls(
            expression=[f.expression for f in confirmed],
            n=[len(f.trials) for f in confirmed],
            mean=np.array([f.mean for f in confirmed], dtype=float),
            low=bounds.reshape(-1, 2)[:, 0],
            high=bounds.reshape(-1, 2)[:, 1],
            is_baseline=np.array([f.expression == baseline for f in confirmed], dtype=bool),
        )

    def errors(self, chosen: np.ndarray) -> np.ndarray:
        """The distances from the ``chosen`` (a mask) means down and up to their bounds."""
        return np.vstack([self.mean - self.low, self.high - self.mean])[:, chosen]


def write_plots(study: optuna.Study, sampler: AquaSurfSampler, folder: Path) -> list[Path]:
    """Write ``<study>_map.png/.html``, ``<study>_history.png/.html``, by
    :func:`write_cost_plots` ``<study>_cost.png/.html`` and, once functions are confirmed, by
    :func:`write_confirmed_plots` ``<study>_confirmed.png/.html`` into ``folder``; return their
    paths.

    The map is the paper's picture: every function of the space at its 2-D position, coloured
    by the surrogate's predicted score, the evaluated ones marked and coloured by their measured
    score (failed ones as crosses), the best as a star. The history shows each trial's score
    and the best so far.

    Raises
    ------
    UserError
        When matplotlib or plotly is missing, or the study has more than two objectives.
    """
    _check_plot_libraries()
    maximize = score_is_maximized(study)
    coords = sampler.embedding(study)
    predicted = sampler.predict(study)
    evaluated = _evaluated(study, sampler, coords)
    stem = _stem(study, folder)
    paths = [Path(f"{stem}_map.png"), Path(f"{stem}_map.html")]
    paths += [Path(f"{stem}_history.png"), Path(f"{stem}_history.html")]
    _map_png(paths[0], study.study_name, coords, predicted, evaluated, maximize)
    _map_html(paths[1], study.study_name, coords, predicted, evaluated, sampler.space.expressions)
    _history_png(paths[2], study.study_name, evaluated, maximize)
    _history_html(paths[3], study.study_name, evaluated, maximize)
    return paths + write_cost_plots(study, folder) + write_confirmed_plots(study, folder)


def write_cost_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Write ``<study>_cost.png/.html`` into ``folder`` (the plots of :func:`write_plots` that
    need no map) and return their paths.

    Score against cost (relu passes, log scale) of every function of known cost (see
    :func:`~optuna_aquasurf.cli._views.cost_of`) at its mean score (its score, until
    ``aquasurf confirm`` trains it again), the Pareto front of those means
    (:func:`~optuna_aquasurf.cli._views.cost_front`: the best score for its cost) as a step line
    through its highlighted functions, and relu as a star. Needs matplotlib and plotly
    (:func:`write_plots` checks).
    """
    maximize = score_is_maximized(study)
    known = [f for f in functions(study) if f.cost is not None]
    points = Costed.of(known)
    front = Costed.of(cost_front(study))
    relu = Costed.of([f for f in known if f.expression == RELU])
    stem = _stem(study, folder)
    paths = [Path(f"{stem}_cost.png"), Path(f"{stem}_cost.html")]
    _cost_png(paths[0], study.study_name, points, front, relu, maximize)
    _cost_html(paths[1], study.study_name, points, front, relu, maximize)
    return paths


def write_confirmed_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Write ``<study>_confirmed.png/.html`` into ``folder`` when the study has functions of 2
    scores or more (trained again by ``aquasurf confirm``) and return their paths; none else.

    Each confirmed function's mean score with its 95% interval, best mean first (as
    :func:`~optuna_aquasurf.cli._views.functions` ranks them), the baseline that ``aquasurf
    best`` compares with marked, and a horizontal line at the baseline's mean. Needs matplotlib
    and plotly (:func:`write_plots` checks).
    """
    confirmed = [f for f in functions(study) if len(f.trials) >= 2]
    if not confirmed:
        return []
    maximize = score_is_maximized(study)
    baseline = baseline_function(study)
    stem = _stem(study, folder)
    paths = [Path(f"{stem}_confirmed.png"), Path(f"{stem}_confirmed.html")]
    shown = Confirmed.of(confirmed, None if baseline is None else baseline.expression)
    _confirmed_png(paths[0], study.study_name, shown, baseline, maximize)
    _confirmed_html(paths[1], study.study_name, shown, baseline, maximize)
    return paths


def _stem(study: optuna.Study, folder: Path) -> Path:
    """The path of the study's plots without their suffixes; ``folder`` is created."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / study.study_name.replace("/", "_")


def _check_plot_libraries() -> None:
    """Raise a UserError naming the extra to install when matplotlib or plotly is missing."""
    import importlib.util

    missing = [name for name in ("matplotlib", "plotly") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"`aquasurf plot` needs {' and '.join(missing)}: pip install 'optuna-aquasurf[plot]'"
        )


def _evaluated(study: optuna.Study, sampler: AquaSurfSampler, coords: np.ndarray) -> Evaluated:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        expression = trial.user_attrs.get("activation")
        if expression is None or not counts_toward_target(trial):
            continue
        score = score_of(trial) if trial.state == TrialState.COMPLETE else math.nan
        rows.append((coords[sampler.locate(expression)[0]], score, expression, trial.number))
    return Evaluated(
        xy=np.array([r[0] for r in rows]).reshape(-1, 2),
        score=np.array([r[1] for r in rows], dtype=float),
        expression=[r[2] for r in rows],
        trial=[r[3] for r in rows],
    )


def _best_so_far(scores: np.ndarray, maximize: bool) -> np.ndarray:
    filled = np.where(np.isnan(scores), -np.inf if maximize else np.inf, scores)
    best = np.maximum.accumulate(filled) if maximize else np.minimum.accumulate(filled)
    return np.where(np.isinf(best), np.nan, best)


def _best_index(evaluated: Evaluated, maximize: bool) -> int | None:
    if np.isnan(evaluated.score).all():
        return None
    return int(np.nanargmax(evaluated.score) if maximize else np.nanargmin(evaluated.score))


def _color_range(predicted: np.ndarray | None, evaluated: Evaluated) -> tuple[float, float]:
    values = evaluated.score[~np.isnan(evaluated.score)]
    if predicted is not None:
        values = np.concatenate([values, predicted[np.isfinite(predicted)]])
    if len(values) == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


def _map_png(path, name, coords, predicted, evaluated, maximize) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, high = _color_range(predicted, evaluated)
    figure, axes = plt.subplots(figsize=(8, 7), dpi=120)
    shared = {"cmap": "viridis", "vmin": low, "vmax": high}
    if predicted is None:
        axes.scatter(coords[:, 0], coords[:, 1], s=4, c="lightgray", label="not evaluated")
    else:
        points = axes.scatter(coords[:, 0], coords[:, 1], s=4, c=predicted, alpha=0.6, **shared)
        figure.colorbar(points, ax=axes, label="score (predicted; measured for circles)")
    ok = ~np.isnan(evaluated.score)
    axes.scatter(*evaluated.xy[ok].T, s=60, c=evaluated.score[ok], edgecolors="black", **shared)
    axes.scatter(*evaluated.xy[~ok].T, s=60, marker="x", c="red", label="failed or pruned")
    best = _best_index(evaluated, maximize)
    if best is not None:
        axes.scatter(*evaluated.xy[best], s=300, marker="*", c="gold", edgecolors="black")
        axes.annotate(
            evaluated.expression[best],
            evaluated.xy[best],
            fontsize=8,
            xytext=(8, 8),
            textcoords="offset points",
        )
    axes.set_title(f"{name}: {len(coords):,} functions, {len(evaluated.trial)} trials")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _history_png(path, name, evaluated, maximize) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    axes.scatter(evaluated.trial, evaluated.score, s=18, c="tab:blue", label="trial")
    axes.step(
        evaluated.trial,
        _best_so_far(evaluated.score, maximize),
        where="post",
        c="tab:orange",
        label="best so far",
    )
    axes.set_xlabel("trial")
    axes.set_ylabel("score")
    axes.set_title(f"{name}: best so far")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _map_html(path, name, coords, predicted, evaluated, expressions) -> None:
    import plotly.graph_objects as go

    low, high = _color_range(predicted, evaluated)
    colors = {"colorscale": "Viridis", "cmin": low, "cmax": high}
    hover = (
        expressions
        if predicted is None
        else [f"{e}<br>predicted {p:.4f}" for e, p in zip(expressions, predicted)]
    )
    figure = go.Figure()
    figure.add_trace(
        go.Scattergl(
            x=coords[:, 0],
            y=coords[:, 1],
            mode="markers",
            name="space",
            text=hover,
            hoverinfo="text",
            marker={"size": 4, "opacity": 0.6, "color": "lightgray"}
            if predicted is None
            else {
                "size": 4,
                "opacity": 0.6,
                "color": predicted,
                "colorbar": {"title": "score"},
                **colors,
            },
        )
    )
    labels = [
        f"trial {t}: {e}<br>{'failed or pruned' if np.isnan(s) else f'score {s:.4f}'}"
        for t, e, s in zip(evaluated.trial, evaluated.expression, evaluated.score)
    ]
    figure.add_trace(
        go.Scatter(
            x=evaluated.xy[:, 0],
            y=evaluated.xy[:, 1],
            mode="markers",
            name="evaluated",
            text=labels,
            hoverinfo="text",
            marker={
                "size": 11,
                "color": np.nan_to_num(evaluated.score, nan=low),
                "line": {"width": 1, "color": "black"},
                "symbol": ["x" if np.isnan(s) else "circle" for s in evaluated.score],
                **colors,
            },
        )
    )
    figure.update_layout(
        title=f"{name}: map of the search space",
        template="plotly_white",
        xaxis={"visible": False},
        yaxis={"visible": False},
    )
    figure.write_html(path, include_plotlyjs="directory")


def _history_html(path, name, evaluated, maximize) -> None:
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=evaluated.trial,
            y=evaluated.score,
            mode="markers",
            name="trial",
            text=evaluated.expression,
        )
    )
    figure.add_trace(
        go.Scatter(
            x=evaluated.trial,
            y=_best_so_far(evaluated.score, maximize),
            mode="lines",
            line_shape="hv",
            name="best so far",
        )
    )
    figure.update_layout(
        title=f"{name}: best so far",
        xaxis_title="trial",
        yaxis_title="score",
        template="plotly_white",
    )
    figure.write_html(path, include_plotlyjs="directory")


def _cost_png(path, name, points, front, relu, maximize) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    axes.scatter(points.cost, points.score, s=18, c="tab:blue", alpha=0.6, label="function")
    axes.step(front.cost, front.score, where="post", c="tab:orange", label="Pareto front")
    axes.scatter(front.cost, front.score, s=60, c="tab:orange", edgecolors="black", zorder=3)
    for cost, score, expression in zip(front.cost, front.score, front.expression):
        axes.annotate(
            expression, (cost, score), fontsize=7, xytext=(6, 4), textcoords="offset points"
        )
    if relu.trial:
        star = {"s": 250, "marker": "*", "c": "gold", "edgecolors": "black", "zorder": 4}
        axes.scatter(relu.cost, relu.score, label=RELU, **star)
    if len(points.cost):  # an empty log axis fails to draw
        axes.set_xscale("log")
    axes.set_xlabel("cost (forward and backward time over relu's, CPU)")
    repeated = any(n > 1 for n in points.n)
    way = "maximize" if maximize else "minimize"
    axes.set_ylabel(f"{'mean score' if repeated else 'score'} ({way})")
    axes.set_title(f"{name}: score against cost, {len(front.trial)} functions on the front")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _cost_html(path, name, points, front, relu, maximize) -> None:
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=points.cost,
            y=points.score,
            mode="markers",
            name="function",
            text=points.labels(),
            hoverinfo="text",
            marker={"size": 7, "opacity": 0.6},
        )
    )
    figure.add_trace(
        go.Scatter(
            x=front.cost,
            y=front.score,
            mode="lines+markers",
            line_shape="hv",
            name="Pareto front",
            text=front.labels(),
            hoverinfo="text",
            marker={"size": 11, "line": {"width": 1, "color": "black"}},
        )
    )
    if relu.trial:
        figure.add_trace(
            go.Scatter(
                x=relu.cost,
                y=relu.score,
                mode="markers",
                name=RELU,
                text=relu.labels(),
                hoverinfo="text",
                marker={"size": 16, "symbol": "star", "color": "gold", "line": {"width": 1}},
            )
        )
    figure.update_layout(
        title=f"{name}: score against cost",
        xaxis={"type": "log", "title": "cost (forward and backward time over relu's, CPU)"},
        yaxis_title=f"{'mean score' if any(n > 1 for n in points.n) else 'score'} "
        f"({'maximize' if maximize else 'minimize'})",
        template="plotly_white",
    )
    figure.write_html(path, include_plotlyjs="directory")


def _confirmed_png(path, name, confirmed, baseline, maximize) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    positions = np.arange(len(confirmed.expression))
    for chosen, color, label in _confirmed_series(confirmed):
        axes.errorbar(
            positions[chosen],
            confirmed.mean[chosen],
            yerr=confirmed.errors(chosen),
            fmt="o",
            capsize=4,
            c=color,
            label=label,
        )
    if baseline is not None:
        axes.axhline(baseline.mean, c=BASELINE_COLOR, ls="--", lw=1, label="baseline's mean")
    axes.set_xticks(positions, confirmed.expression, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(f"mean score ({'maximize' if maximize else 'minimize'}), 95% interval")
    axes.set_title(f"{name}: {len(positions)} confirmed functions")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _confirmed_html(path, name, confirmed, baseline, maximize) -> None:
    import plotly.graph_objects as go

    labels = np.array(
        [
            f"{e}<br>mean {m:.4f} of {n} scores<br>95% interval {low:.4f} to {high:.4f}"
            for e, m, n, low, high in zip(
                confirmed.expression, confirmed.mean, confirmed.n, confirmed.low, confirmed.high
            )
        ]
    )
    expressions = np.array(confirmed.expression)
    figure = go.Figure()
    for chosen, color, label in _confirmed_series(confirmed):
        down, up = confirmed.errors(chosen)
        figure.add_trace(
            go.Scatter(
                x=expressions[chosen],
                y=confirmed.mean[chosen],
                mode="markers",
                name=label,
                text=labels[chosen],
                hoverinfo="text",
                marker={"size": 10, "color": color},
                error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down},
            )
        )
    if baseline is not None:
        figure.add_hline(y=baseline.mean, line_dash="dash", line_color=BASELINE_COLOR)
    figure.update_layout(
        title=f"{name}: confirmed functions, mean score and its 95% interval",
        xaxis={"categoryorder": "array", "categoryarray": confirmed.expression},
        yaxis_title=f"mean score ({'maximize' if maximize else 'minimize'})",
        template="plotly_white",
    )
    figure.write_html(path, include_plotlyjs="directory")


def _confirmed_series(confirmed) -> list[tuple[np.ndarray, str, str]]:
    """The confirmed functions in two series, the baseline apart: the mask, colour and legend
    label of each that has a function."""
    series = [
        (~confirmed.is_baseline, FUNCTION_COLOR, "confirmed function"),
        (confirmed.is_baseline, BASELINE_COLOR, "baseline"),
    ]
    return [(chosen, color, label) for chosen, color, label in series if chosen.any()]
