"""Replay activation searches on Act-Bench-Digits: every trial looks its score up in the table.

    python -m benchmarks.replay --arch cnn                  # 20 seeds x 200 trials per sampler
    python -m benchmarks.replay --arch all --surrogate      # surrogate quality, label efficiency
    python -m benchmarks.replay --arch cnn --samplers aquasurf,random --seeds 5
    python -m benchmarks.replay --arch all --prior all --trials 100   # transfer between tables
    python -m benchmarks.replay --arch all --front --trials 50        # fronts of score and cost
    python -m benchmarks.replay --arch cnn,vit --samplers aquasurf,greedy --seeds 2 --check

Results are appended to ``benchmarks/results/replay_<arch>.jsonl`` (one line per sampler and
seed; a rerun skips what is there), then summarised: median evaluations to reach the best
function, the top 1% and the top 5%, median regret after 10/25/50/100/200 trials, and a PNG of the
best-so-far curves with interquartile bands (``benchmarks/results/replay_<arch>.png``). The score
is the table's main score (validation accuracy, or -log10 of the validation MSE for
``regression``; maximised); regret is the best score in the table minus the best found. The
table's noise unit (the standard deviation of a good function's score between two training
seeds, from its noise re-run) is printed beside; a regret is marked ``*`` where it is lower than
every other sampler's by more than that unit.

With ``--prior SOURCES``, each target table (``--arch``) is searched by the default sampler
starting from each other table of SOURCES (``prior-<source>``), from a copy of it whose scores
are shuffled between functions (``shuffled-<source>``) and from one that counts them the other
way (``reversed-<source>``); the summary sets them beside the default without a prior, pair by
pair, with the two tables' Spearman correlation.

With ``--front``, studies of two objectives, the table's score and the function's cost (its
forward and backward time over relu's on one CPU thread, measured once into
``benchmarks/results/costs_paper.json``), are searched by the default sampler and by Random,
TPE and NSGA-II (which know the cost only from the trials), each function under the name the
default sampler gives it (a baseline's own spelling); the summary gives the hypervolume of each
front found (:func:`optuna_aquasurf._front.hypervolume`: costs on a log scale, above the
reference of the table's median score and twice the highest cost) as a share of the table's
whole front.

With ``--check``, the searches of ``--samplers`` (any name of the modes above) for the first
``--seeds`` seeds run again and their scores are compared, trial by trial, with those stored in
``--against`` (by default ``benchmarks/results``): a change that should not alter the search
must replay them bit for bit. Stored results of other library versions may differ (the features'
numerics): to check a change, store the searches of the code before it first.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from sklearn.neighbors import KNeighborsRegressor

from benchmarks.act_bench_digits import ARCHITECTURES, load_act_bench_digits
from benchmarks.act_bench_digits._train import build_model, task_of
from benchmarks.act_bench_digits.build import GOOD_SCORE
from benchmarks.evolution import RegularizedEvolutionSampler
from optuna_aquasurf import AquaSurfSampler, SearchSpace, suggest_activation
from optuna_aquasurf._cost import measure_costs, stored_costs
from optuna_aquasurf._front import hypervolume, on_front
from optuna_aquasurf._operators import PAPER_UNARY
from optuna_aquasurf._private import storage_of
from optuna_aquasurf._sampler import DEFAULT_BASELINES
from optuna_aquasurf._store import store_for
from optuna_aquasurf.features import FisherProbe

RESULTS = Path(__file__).resolve().parent / "results"
#: Scored functions at which --surrogate measures label efficiency, and draws of each.
LABELS = (8, 16, 32, 64)
LABEL_DRAWS = 20
CHECKPOINTS = (10, 25, 50, 100, 200)
#: The weight of the Fisher block in the single feature space of version 0.1's surrogate.
PREVIOUS_FISHER_WEIGHT = 0.25
FISHER_BATCH = 128


def _aquasurf(**options):
    """An AquaSurfSampler with the Fisher probe of the architecture (unless probe=None)."""
    probe = options.pop("probe", True)
    return lambda c, s: AquaSurfSampler(c.space, c.probe if probe else None, seed=s, **options)


def _on_the_map(**options):
    """The default of versions up to 0.4: kNN (k=3, uniform) on the 2-D map, 16 space-filling
    picks, then the distance bonus; ``options`` vary it."""
    settings = {"surrogate": "map", "acquisition": "explore", "n_design": 16, **options}

    def make(c, s):
        return _aquasurf(regressor=KNeighborsRegressor(n_neighbors=3), **settings)(c, s)

    return make


def _with_prior(source: str, copy: str | None = None):
    """The default sampler starting from the bundled table ``source`` (an architecture), or
    from a ``"shuffled"`` or ``"reversed"`` copy of it (see :func:`_table_copy`)."""

    def make(c, s):
        prior = _table_copy(source, copy, s) if copy else f"act-bench-digits:{source}"
        return AquaSurfSampler(c.space, c.probe, seed=s, prior=[prior])

    return make


def _table_copy(arch: str, copy: str, seed: int) -> optuna.Study:
    """A study holding the table of ``arch`` with each function given another's result (score,
    or failure where that one diverged; ``"shuffled"``, seeded by ``seed``), or with every score
    counted the other way (``"reversed"``: a study that minimises them; failures stay failures)."""
    table = load_act_bench_digits(arch)
    shuffled = copy == "shuffled"
    order = np.random.default_rng(seed).permutation(len(table)) if shuffled else range(len(table))
    study = optuna.create_study(direction="maximize" if shuffled else "minimize")
    study.add_trials(
        optuna.trial.create_trial(
            state=TrialState.FAIL if table.diverged[k] else TrialState.COMPLETE,
            value=None if table.diverged[k] else float(table.score[k]),
            user_attrs={"activation": expression},
        )
        for expression, k in zip(table.expressions, order)
    )
    return study


SAMPLERS = {
    "aquasurf": _aquasurf(),
    "aquasurf-map": _on_the_map(),
    "greedy": _on_the_map(acquisition="greedy", n_design=0),
    "greedy-features": _aquasurf(acquisition="greedy"),
    "ucb-0.25": _aquasurf(exploration=0.25),
    "ucb-1": _aquasurf(exploration=1.0),
    "aquasurf-outputs": _on_the_map(probe=None),
    "aquasurf-fisher": _on_the_map(use_outputs=False),
    # Variants of the map's acquisition, to choose its settings.
    "explore-0.25": _on_the_map(exploration=0.25),
    "explore-1": _on_the_map(exploration=1.0),
    "design-0": _on_the_map(n_design=0),
    "design-8": _on_the_map(n_design=8),
    # Fisher features on a budget: of a space-filling 10% and 25% of the space.
    "fisher-10%": _on_the_map(fisher_budget=292),
    "fisher-25%": _on_the_map(fisher_budget=730),
    "random": lambda c, s: optuna.samplers.RandomSampler(seed=s),
    "tpe": lambda c, s: optuna.samplers.TPESampler(seed=s),
    "gp": lambda c, s: optuna.samplers.GPSampler(seed=s),
    "evolution": lambda c, s: RegularizedEvolutionSampler(c.space, seed=s),
    # Transfer: the default sampler with another table as its prior, true, shuffled or reversed.
    **{f"prior-{a}": _with_prior(a) for a in ARCHITECTURES},
    **{f"{c}-{a}": _with_prior(a, c) for a in ARCHITECTURES for c in ("shuffled", "reversed")},
}


#: Searches kept in the results from an earlier version and summarised beside the others, never
#: run again: the default of version 0.1 (searched at commit 1452214).
STORED = ("aquasurf-0.1",)


#: Searches of score and cost (``--front``).
FRONT_SAMPLERS = {
    "front-aquasurf": _aquasurf(),
    "front-random": lambda c, s: optuna.samplers.RandomSampler(seed=s),
    "front-tpe": lambda c, s: optuna.samplers.TPESampler(seed=s),
    # With one parameter, its mutation (probability 1 / parameters) redraws every child's at
    # random, with its independent sampler: it draws what Random draws, at any population size.
    "front-nsga2": lambda c, s: optuna.samplers.NSGAIISampler(seed=s),
}


def _probe_model(arch: str, activation):
    return build_model(arch, activation.expression, seed=1)


@functools.lru_cache(maxsize=1)
def _paper_space() -> SearchSpace:
    """The 2,918 functions that every Act-Bench-Digits table scores."""
    return SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)


@functools.lru_cache(maxsize=1)
def _front_names() -> list[str]:
    """Each function of the paper space under the name the default sampler gives it: a
    baseline's own spelling, else the space's expression."""
    sampler = AquaSurfSampler(_paper_space())
    return [sampler.name_of(function) for function in range(len(sampler.space))]


@functools.lru_cache(maxsize=1)
def _costs() -> dict[str, float]:
    """The cost of each name of :func:`_front_names` and of the space's expressions, measured
    once into ``results/costs_paper.json``."""
    path = RESULTS / "costs_paper.json"
    if not path.exists():
        names = sorted(set(_front_names()) | set(_paper_space().expressions))
        costs = measure_costs(names)
        path.write_text(json.dumps(dict(zip(names, np.round(costs, 4).tolist())), indent=0))
    return json.loads(path.read_text())


def _table_scores(arch: str) -> np.ndarray:
    """The main score of every function of the paper space in the table of ``arch``."""
    table = load_act_bench_digits(arch)
    return np.array([table.value(e) for e in _paper_space().expressions])


class Context:
    """The space, the table and the Fisher probe of one architecture."""

    def __init__(self, arch: str):
        self.arch = arch
        self.table = load_act_bench_digits(arch)
        self.space = _paper_space()
        train = task_of(arch).splits()["train"]
        self.probe = FisherProbe(
            functools.partial(_probe_model, arch),
            train.x[:FISHER_BATCH],
            train.y[:FISHER_BATCH],
            progress=False,
        )
        self.scores = _table_scores(arch)

    def run(self, sampler_name: str, seed: int, n_trials: int) -> list:
        """The score of each trial of one search (score and cost in a search of the front)."""
        if sampler_name in FRONT_SAMPLERS:
            return self.run_front(sampler_name, seed, n_trials)
        sampler = SAMPLERS[sampler_name](self, seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        if isinstance(sampler, AquaSurfSampler):

            def objective(trial):
                return self.table.value(suggest_activation(trial).expression)
        else:
            choices = self.space.expressions

            def objective(trial):
                return self.table.value(trial.suggest_categorical("activation", choices))

        study.optimize(objective, n_trials=n_trials)
        return [t.value for t in study.trials]

    def run_front(self, sampler_name: str, seed: int, n_trials: int) -> list[list[float]]:
        """The score and cost of each trial of one search of the front; the default sampler
        knows the costs of :func:`_costs` for every function."""
        sampler = FRONT_SAMPLERS[sampler_name](self, seed)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        costs = _costs()
        if isinstance(sampler, AquaSurfSampler):
            store = store_for(storage_of(study))
            for names in (self.space.expressions, list(DEFAULT_BASELINES)):
                stored_costs(store, names, measure=lambda e: np.array([costs[n] for n in e]))

            def choose(trial):
                return suggest_activation(trial).expression
        else:

            def choose(trial):
                return trial.suggest_categorical("activation", _front_names())

        def objective(trial):
            expression = choose(trial)
            return self.table.value(expression), costs[expression]

        study.optimize(objective, n_trials=n_trials)
        return [t.values for t in study.trials]


_CONTEXT: Context | None = None


def _job(arch: str, sampler_name: str, seed: int, n_trials: int) -> dict:
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT.arch != arch:
        _CONTEXT = Context(arch)
    start = time.perf_counter()
    values = _CONTEXT.run(sampler_name, seed, n_trials)
    seconds = round(time.perf_counter() - start, 1)
    return {"sampler": sampler_name, "seed": seed, "values": values, "seconds": seconds}


def run_searches(arch: str, samplers: list[str], seeds: int, n_trials: int, workers: int) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"replay_{arch}.jsonl"
    done = {(r["sampler"], r["seed"]) for r in _read(path) if len(r["values"]) >= n_trials}
    # Seed-major order: a worker computes a seed's embedding once for the samplers sharing it.
    jobs = [(arch, s, seed, n_trials) for seed in range(seeds) for s in samplers]
    jobs = [j for j in jobs if (j[1], j[2]) not in done]
    print(f"{len(jobs)} searches to run ({len(done)} done), {workers} worker(s)", flush=True)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for result in pool.imap_unordered(_star_job, jobs):
            with path.open("a") as f:
                f.write(json.dumps(result) + "\n")
            values = result["values"]
            best = np.array(values).reshape(len(values), -1)[:, 0].max()
            print(
                f"{result['sampler']:>16} seed {result['seed']:>2}: best {best:.4f} in "
                f"{result['seconds']} s",
                flush=True,
            )
    return path


def check_replays(
    archs: list[str], samplers: list[str], seeds: int, workers: int, against: Path = RESULTS
) -> bool:
    """Run the searches of ``samplers`` stored in ``against`` for seeds below ``seeds`` again
    and print, per table and sampler, whether every trial's score is the same; True when all
    are."""
    stored = {
        a: {(r["sampler"], r["seed"]): r["values"] for r in _read(against / f"replay_{a}.jsonl")}
        for a in archs
    }
    jobs = [
        (a, s, seed, len(stored[a][s, seed]))
        for a in archs
        for seed in range(seeds)
        for s in samplers
        if (s, seed) in stored[a]
    ]
    print(f"{len(jobs)} stored searches to replay, {workers} worker(s)", flush=True)
    identical = True
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for (arch, *_), result in zip(jobs, pool.imap(_star_job, jobs)):
            before = stored[arch][result["sampler"], result["seed"]]
            same = result["values"] == before
            first = next(
                (i for i, (a, b) in enumerate(zip(before, result["values"])) if a != b), None
            )
            identical &= same
            verdict = "identical" if same else f"DIFFERS from trial {first}"
            print(
                f"{arch:>10} {result['sampler']:>20} seed {result['seed']:>2}: {len(before)} "
                f"trials {verdict}",
                flush=True,
            )
    return identical


def _star_job(job):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import torch

    torch.set_num_threads(1)
    return _job(*job)


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finished_runs(arch: str, n_trials: int) -> list[dict]:
    """The stored searches of ``arch`` with at least ``n_trials`` trials."""
    return [r for r in _read(RESULTS / f"replay_{arch}.jsonl") if len(r["values"]) >= n_trials]


def summarise(arch: str, samplers: list[str], n_trials: int) -> None:
    table = load_act_bench_digits(arch)
    scores = _table_scores(arch)
    best = scores.max()
    top1, top5 = np.quantile(scores, 0.99), np.quantile(scores, 0.95)
    unit = noise_unit(arch)
    runs = _finished_runs(arch, n_trials)
    checkpoints = [c for c in CHECKPOINTS if c <= n_trials]
    image = ", one validation image 0.0028" if table.score_column == "val_acc" else ""
    print(
        f"\nAct-Bench-Digits {arch}: {len(scores)} functions, best {table.score_column} "
        f"{best:.4f}, top 1% >= {top1:.4f}, top 5% >= {top5:.4f}; noise unit {unit:.4f} (std of "
        f"a good function's score between training seeds{image}); medians over seeds; * = lower "
        "than every other sampler's by more than the noise unit"
    )
    header = f"{'sampler':>16} {'seeds':>5} {'to best':>8} {'to top1%':>8} {'to top5%':>8}"
    print(header + "".join(f" {'regret@' + str(c):>11}" for c in checkpoints))
    curves, rows = {}, {}
    for name in samplers:
        mine = [r["values"][:n_trials] for r in runs if r["sampler"] == name]
        if not mine:
            continue
        so_far = np.maximum.accumulate(np.array(mine), axis=1)
        curves[name] = so_far
        reach = [_median_reach(so_far, level) for level in (best, top1, top5)]
        rows[name] = (len(mine), reach, [np.median(best - so_far[:, c - 1]) for c in checkpoints])
    for name, (n_seeds, reach, regrets) in rows.items():
        marks = [
            "*" if all(r + unit < other[2][i] for o, other in rows.items() if o != name) else " "
            for i, r in enumerate(regrets)
        ]
        print(
            f"{name:>16} {n_seeds:>5} "
            + " ".join(f"{r:>8}" for r in reach)
            + "".join(f" {r:>10.4f}{m}" for r, m in zip(regrets, marks))
        )
    _plot(arch, curves, best, table.score_column)


def transfer_summary(targets: list[str], sources: list[str], n_trials: int) -> None:
    """Per pair of tables (source -> target): regret after 10/25/50/100 trials and evaluations
    to the top 1%, without a prior, with the source's table and with it shuffled (medians over
    seeds), against the targets of issue #16."""
    from scipy.stats import spearmanr

    scores = {a: _table_scores(a) for a in {*targets, *sources}}
    checkpoints = [c for c in (10, 25, 50, 100) if c <= n_trials]
    print(
        f"\nTransfer between Act-Bench-Digits tables: medians over seeds of the regret after "
        f"{'/'.join(map(str, checkpoints))} trials and of the evaluations to the top 1%; "
        "rho: Spearman of the two tables over all functions (finite ones in brackets)"
    )
    print(
        f"{'source -> target':>22} {'rho':>12} {'prior':>9} {'seeds':>5} "
        + " ".join(f"{'@' + str(c):>7}" for c in checkpoints)
        + f" {'top1%':>6}  checks"
    )
    finite = _paper_space().finite
    for target in targets:
        best, top1 = scores[target].max(), np.quantile(scores[target], 0.99)
        unit = noise_unit(target)
        runs = _finished_runs(target, n_trials)
        for source in (s for s in sources if s != target):
            rho = spearmanr(scores[source], scores[target]).statistic
            rho_finite = spearmanr(scores[source][finite], scores[target][finite]).statistic
            rows = {}
            for label, name in (
                ("none", "aquasurf-0.1"),  # the stored transfer searches are 0.1's
                ("table", f"prior-{source}"),
                ("shuffled", f"shuffled-{source}"),
                ("reversed", f"reversed-{source}"),
            ):
                values = np.array([r["values"][:n_trials] for r in runs if r["sampler"] == name])
                if len(values) == 0:
                    continue
                so_far = np.maximum.accumulate(values, axis=1)
                regret = [float(np.median(best - so_far[:, c - 1])) for c in checkpoints]
                rows[label] = (len(values), regret, _median_reach(so_far, top1))
            for label, (n_seeds, regret, reach) in rows.items():
                pair = f"{source} -> {target}" if label == "none" else ""
                correlation = f"{rho:.2f} ({rho_finite:.2f})" if label == "none" else ""
                print(
                    f"{pair:>22} {correlation:>12} {label:>9} {n_seeds:>5} "
                    + " ".join(f"{r:7.4f}" for r in regret)
                    + f" {reach:>6}  {_transfer_checks(label, rows, rho, unit, checkpoints)}"
                )


def front_summary(targets: list[str], n_trials: int) -> None:
    """Per table: the hypervolume of the front of score and cost found after 10, 25 and 50
    trials by each sampler of :data:`FRONT_SAMPLERS`, as a share of the table's whole front
    (medians and quartiles over seeds), against the targets of issue #17."""
    checkpoints = [c for c in CHECKPOINTS if c <= n_trials]
    costs = np.array([_costs()[name] for name in _front_names()])
    for arch in targets:
        scores = _table_scores(arch)
        reference = (float(np.median(scores)), 2 * float(costs.max()))
        whole = hypervolume(scores, costs, reference)
        print(
            f"\n{arch}: front of score and cost, {on_front(scores, costs).sum()} of "
            f"{len(scores)} functions; share of its hypervolume found (median [quartiles])"
        )
        print(
            f"{'sampler':>16} {'seeds':>5}" + "".join(f" {'@' + str(c):>20}" for c in checkpoints)
        )
        medians = {}
        finished = _finished_runs(arch, n_trials)
        for name in FRONT_SAMPLERS:
            runs = [np.array(r["values"]) for r in finished if r["sampler"] == name]
            if not runs:
                continue
            shares = np.array(
                [
                    [hypervolume(v[:c, 0], v[:c, 1], reference) / whole for c in checkpoints]
                    for v in runs
                ]
            )
            low, medians[name], high = np.quantile(shares, [0.25, 0.5, 0.75], axis=0)
            print(
                f"{name:>16} {len(runs):>5}"
                + "".join(
                    f" {m:>8.3f} [{a:.3f}-{b:.3f}]" for m, a, b in zip(medians[name], low, high)
                )
            )
        mine = medians.get("front-aquasurf")
        others = [m for n, m in medians.items() if n != "front-aquasurf"]
        if mine is not None and others and 50 in checkpoints:
            at = checkpoints.index(50)
            best_other = max(m[at] for m in others)
            print(
                f"  @50: {mine[at]:.3f} against the others' best {best_other:.3f} "
                f"({'met' if mine[at] >= best_other else 'MISSED'}), and 90% of the whole front "
                f"({'met' if mine[at] >= 0.9 else 'MISSED'})"
            )


def _transfer_checks(label, rows, rho, unit, checkpoints) -> str:
    """The targets of #16 that a row can meet: with the table, regret@25 at most half of
    without (where the tables' Spearman is above 0.5) and no worse at 50 and 100; shuffled, at
    most one noise unit worse at 50; reversed, no worse at any checkpoint."""
    if label == "none" or "none" not in rows:
        return ""
    without, mine = rows["none"][1], rows[label][1]
    mine = [r - 1e-9 for r in mine]  # regrets are differences of table scores: equal up to rounding
    at = {c: i for i, c in enumerate(checkpoints)}
    checks = []
    if label == "table":
        if rho > 0.5 and 25 in at:
            ok = mine[at[25]] <= without[at[25]] / 2
            checks.append(f"@25 <= 1/2 {'met' if ok else 'MISSED'}")
        for c in (50, 100):
            if c in at:
                checks.append(f"@{c} {'met' if mine[at[c]] <= without[at[c]] else 'MISSED'}")
    elif label == "shuffled" and 50 in at:
        ok = mine[at[50]] <= without[at[50]] + unit
        checks.append(f"@50 within {unit:.4f} {'met' if ok else 'MISSED'}")
    else:
        ok = all(m <= w for m, w in zip(mine, without))
        checks.append(f"no worse {'met' if ok else 'MISSED'}")
    return ", ".join(checks)


def noise_unit(arch: str) -> float:
    """The standard deviation of one good function's score between two training seeds: that of
    the difference between the main table and the noise re-run (seed 2) over the noise functions
    that score above the builder's "good" threshold in both, divided by sqrt(2)."""
    column, pairs = _seed_pairs(arch)
    good = (pairs > GOOD_SCORE[column.removeprefix("val_")]).all(axis=1)
    return float(np.std(pairs[good, 0] - pairs[good, 1], ddof=1) / np.sqrt(2))


def _seed_pairs(arch: str, keep=lambda expression: True) -> tuple[str, np.ndarray]:
    """The main score's column, and its value in the main table and in the noise re-run (seed 2)
    of each noise function that ``keep`` accepts, one row each."""
    main, noise = load_act_bench_digits(arch), load_act_bench_digits(arch, seed=2)
    expressions = [e for e in noise.expressions if keep(e)]
    return main.score_column, np.array([(main.value(e), noise.value(e)) for e in expressions])


def _median_reach(so_far: np.ndarray, level: float, digits: int = 0) -> str:
    """Median number of evaluations until the best so far reaches ``level``."""
    reached = so_far >= level - 1e-12
    counts = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, np.inf)
    median = np.median(counts)
    return f">{so_far.shape[1]}" if np.isinf(median) else f"{median:.{digits}f}"


def _plot(arch: str, curves: dict[str, np.ndarray], best: float, score: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for name, so_far in curves.items():
        regret = best - so_far
        x = np.arange(1, regret.shape[1] + 1)
        low, median, high = np.quantile(regret, [0.25, 0.5, 0.75], axis=0)
        axis.plot(x, median, label=name)
        axis.fill_between(x, low, high, alpha=0.2)
    axis.set(
        xlabel="evaluations",
        ylabel=f"regret (best {score} - best found)",
        title=f"Act-Bench-Digits {arch}: median and interquartile range over seeds",
    )
    axis.set_yscale("symlog", linthresh=1e-3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / f"replay_{arch}.png", dpi=120)
    print(f"wrote {RESULTS / f'replay_{arch}.png'}")


def surrogate_quality(arch: str, seed: int = 0) -> None:
    """5-fold cross-validated Spearman correlation of kNN (k=3) predictions with the score: on
    the raw features and on their 2-D map; the sampler's own surrogate beside version 0.1's, itself
    without the Fisher probe and a kNN on the raw outputs, at 5 folds and at 8 to 64 scores
    (:func:`label_efficiency`); and the ceiling that the table's noise sets."""
    from scipy.stats import spearmanr
    from sklearn.model_selection import KFold, cross_val_predict

    from optuna_aquasurf._embedding import embed
    from optuna_aquasurf._map import SpaceMap
    from optuna_aquasurf._store import MemoryStore
    from optuna_aquasurf._surrogate import Surrogate, default_regressor

    context = Context(arch)
    keep = context.space.finite
    space_map = SpaceMap(context.space, context.probe, seed)
    store = MemoryStore()
    outputs = space_map.output_features()[keep]
    start = time.perf_counter()
    fisher = space_map.fisher_features(store)[keep]
    print(f"Fisher features of all {len(keep)} functions: {time.perf_counter() - start:.1f} s")
    y = context.scores[keep]

    def spearman(x, metric="euclidean"):
        knn = KNeighborsRegressor(n_neighbors=3, metric=metric)
        folds = KFold(5, shuffle=True, random_state=seed)
        return spearmanr(cross_val_predict(knn, x, y, cv=folds), y).statistic

    def both(fisher):
        return np.hstack([outputs / np.linalg.norm(outputs), fisher / np.linalg.norm(fisher)])

    rows = {
        "outputs": (spearman(outputs), spearman(embed(outputs, None, seed))),
        "fisher": (spearman(fisher, "manhattan"), spearman(embed(None, fisher, seed))),
        "both": (spearman(both(fisher)), spearman(embed(outputs, fisher, seed))),
    }
    for share in (0.10, 0.25):
        placed = _budgeted_fisher(context, keep, outputs, share, seed)
        name = f"both, Fisher of {share:.0%}"
        rows[name] = (spearman(both(placed)), spearman(embed(outputs, placed, seed)))
    ceiling, pairs = noise_ceiling(arch)
    print(
        f"\nSurrogate quality on {arch} ({keep.sum()} finite functions): Spearman correlation "
        f"of 5-fold kNN (k=3) predictions with {context.table.score_column}"
    )
    print(f"{'features':>22} {'raw':>8} {'UMAP':>8}")
    for name, (raw, umap) in rows.items():
        print(f"{name:>22} {raw:8.3f} {umap:8.3f}")
    views = [view[keep] for view in space_map.feature_views(store)]
    previous = np.hstack([views[0], PREVIOUS_FISHER_WEIGHT * views[-1][:, views[0].shape[1] :]])
    without_fisher = SpaceMap(context.space, None, seed).features(store)[keep]
    candidates = {
        "the sampler's surrogate": _fitted(lambda: Surrogate(views, default_regressor(), seed)),
        "0.1's surrogate (Fisher 1/4)": _fitted(previous, default_regressor),
        "without the Fisher probe": _fitted(without_fisher, default_regressor),
        "kNN (k=3) on raw outputs": _fitted(outputs, lambda: KNeighborsRegressor(n_neighbors=3)),
    }
    splits = KFold(5, shuffle=True, random_state=seed).split(y)
    folds = [(np.sort(train), np.sort(test)) for train, test in splits]
    print("5-fold Spearman, the same folds for each (inverse-distance kNN, k=3, unless named):")
    for name, fitted in candidates.items():
        predicted = np.empty(len(y))
        for train, test in folds:
            predicted[test] = fitted(train, y[train])[test]
        print(f"{name:>30} {spearmanr(predicted, y).statistic:.3f}")
    print(
        f"noise ceiling: two training seeds agree with Spearman {ceiling**2:.3f} on {pairs} "
        f"functions, so a perfect predictor of a function's expected score reaches about "
        f"{ceiling:.3f} against one seed's"
    )
    print(
        f"\nLabel efficiency: Spearman of predictions with the other functions' scores, fitted on "
        f"n scored functions (the baselines, then random ones), median of {LABEL_DRAWS} draws"
    )
    print(f"{'features':>30}" + "".join(f"{f'n={n}':>8}" for n in LABELS))
    for name, medians in label_efficiency(context, keep, candidates, seed).items():
        print(f"{name:>30}" + "".join(f"{m:8.3f}" for m in medians))


def _fitted(x, regressor=None):
    """A candidate surrogate of :func:`label_efficiency`: from the positions of the scored
    functions and their scores, a prediction for every function. ``x`` is a factory of
    :class:`~optuna_aquasurf._surrogate.Surrogate` (without ``regressor``), or the functions'
    features, one row each, read by a fresh ``regressor()``."""
    if regressor is None:
        return lambda scored, scores: x().predict(scored, scores)[0]
    return lambda scored, scores: regressor().fit(x[scored], scores).predict(x)


def label_efficiency(context, keep, candidates, seed: int = 0) -> dict[str, list[float]]:
    """For each of ``candidates`` (name -> :func:`_fitted`), the median over
    :data:`LABEL_DRAWS` draws of the Spearman correlation between its predictions and the
    table's scores of the functions not scored, when it is fitted on ``n`` scored functions for
    each ``n`` of :data:`LABELS`: the baselines, then random ones (the same draws for every
    candidate)."""
    from scipy.stats import spearmanr

    y = context.scores[keep]
    position = {int(f): i for i, f in enumerate(np.flatnonzero(keep))}
    found = [context.space.find_equivalent(b) for b in DEFAULT_BASELINES]
    baselines = sorted({position[f] for f in found if f is not None and f in position})
    others = np.setdiff1d(np.arange(len(y)), baselines)
    rng = np.random.default_rng(seed)
    correlations = {name: [[] for _ in LABELS] for name in candidates}
    for column, n in enumerate(LABELS):
        for _ in range(LABEL_DRAWS):
            drawn = rng.choice(others, n - len(baselines), False)
            scored = np.sort(np.concatenate([baselines, drawn]))
            rest = np.setdiff1d(np.arange(len(y)), scored)
            for name, fitted in candidates.items():
                predicted = fitted(scored, y[scored])[rest]
                correlations[name][column].append(spearmanr(predicted, y[rest]).statistic)
    return {name: [float(np.nanmedian(c)) for c in rows] for name, rows in correlations.items()}


def noise_ceiling(arch: str) -> tuple[float, int]:
    """The square root of the Spearman correlation between the main table and the noise re-run
    over their common functions finite at the probe points, and how many they are."""
    from scipy.stats import spearmanr

    space = _paper_space()
    _, pairs = _seed_pairs(arch, keep=lambda e: space[space.index(e)].finite)
    agreement = spearmanr(pairs[:, 0], pairs[:, 1]).statistic
    return float(np.sqrt(max(agreement, 0.0))), len(pairs)


def _budgeted_fisher(context, keep, outputs, share, seed) -> np.ndarray:
    """Fisher features of the finite functions as a budget of ``share`` of the space gives
    them, the way :class:`optuna_aquasurf._map.SpaceMap` does among all functions: computed for
    a space-filling subset, placed from output features for the rest; prints the probe's
    seconds."""
    from optuna_aquasurf._embedding import LARGE_MAP_COMPONENTS, principal_components
    from optuna_aquasurf._fisher_budget import fill_from_neighbours, space_filling_subset

    points = principal_components(outputs, LARGE_MAP_COMPONENTS, seed)
    subset = space_filling_subset(points, round(share * len(context.space)))
    expressions = [e for e, k in zip(context.space.expressions, keep) if k]
    start = time.perf_counter()
    computed = context.probe.features([expressions[i] for i in subset])
    seconds = time.perf_counter() - start
    print(f"Fisher features of {len(subset)} functions ({share:.0%}): {seconds:.1f} s")
    return fill_from_neighbours(points, subset, computed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--surrogate", action="store_true", help="surrogate quality only")
    parser.add_argument("--summary", action="store_true", help="summarise existing results")
    parser.add_argument(
        "--prior", help="transfer: tables to start from (comma-separated, or all), see above"
    )
    parser.add_argument("--front", action="store_true", help="fronts of score and cost")
    parser.add_argument("--check", action="store_true", help="replay stored searches, compare")
    parser.add_argument(
        "--against", type=Path, default=RESULTS, help="--check: the folder of stored searches"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.check:
        archs = list(ARCHITECTURES) if args.arch == "all" else args.arch.split(",")
        ok = check_replays(archs, args.samplers.split(","), args.seeds, args.workers, args.against)
        raise SystemExit(0 if ok else 1)
    if args.surrogate:
        for arch in list(ARCHITECTURES) if args.arch == "all" else args.arch.split(","):
            surrogate_quality(arch)
        return
    if args.prior:
        targets = list(ARCHITECTURES) if args.arch == "all" else args.arch.split(",")
        sources = list(ARCHITECTURES) if args.prior == "all" else args.prior.split(",")
        if not args.summary:
            for target in targets:
                kinds = ("prior", "shuffled", "reversed")
                mine = [f"{k}-{s}" for s in sources if s != target for k in kinds]
                run_searches(target, mine, args.seeds, args.trials, args.workers)
        transfer_summary(targets, sources, args.trials)
        return
    if args.front:
        targets = list(ARCHITECTURES) if args.arch == "all" else args.arch.split(",")
        if not args.summary:
            for target in targets:
                run_searches(target, list(FRONT_SAMPLERS), args.seeds, args.trials, args.workers)
        front_summary(targets, args.trials)
        return
    samplers = args.samplers.split(",")
    unknown = [s for s in samplers if s not in SAMPLERS and s not in STORED]
    if unknown:
        parser.error(f"unknown sampler(s) {unknown}; choose from {', '.join(SAMPLERS)}")
    if not args.summary:
        runnable = [s for s in samplers if s in SAMPLERS]
        run_searches(args.arch, runnable, args.seeds, args.trials, args.workers)
    summarise(args.arch, samplers, args.trials)


if __name__ == "__main__":
    main()
