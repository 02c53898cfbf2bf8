"""Confirm the winners on Act-Bench-Digits: does training the leaders again report a function that
is truly better than the search's best trial? (#25)

    python -m benchmarks.replay_confirm --arch all                # 20 seeds per table, 2 workers
    python -m benchmarks.replay_confirm --arch cnn --seeds 5
    python -m benchmarks.replay_confirm --arch all --summary      # summarise stored results

Every evaluation returns the function's table score plus Gaussian noise of the table's noise unit
(:func:`benchmarks.replay.noise_unit`: the standard deviation of a good function's score between
two training seeds), drawn from the seed and the trial number, as a new training seed would give.
For each seed, the default sampler searches, and three ways report a function:

- ``search``: the best trial after 50 search trials;
- ``confirm``: those 50 trials, then ``confirm(top=5, repeats=3)``'s ``report.best``;
- ``longer``: as many search trials as ``confirm`` trained in all, the best trial.

What counts is the reported function's TRUE score, its table score: regret is the table's best
score minus it. Results are appended to ``benchmarks/results/confirm_<arch>.jsonl`` (one line per
seed; a rerun skips the seeds done), then summarised per table: median regret of each way, in
the table's units and in noise units, against the targets of #25 (``confirm`` at most the others'
median regret on every table, and lower than both by half a noise unit on at least two).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import numpy as np
import optuna

from benchmarks.act_bench_digits import ARCHITECTURES
from benchmarks.replay import RESULTS, SAMPLERS, Context, _read, _table_scores, noise_unit
from optuna_aquasurf import confirm, suggest_activation

SEARCH_TRIALS = 50
TOP, REPEATS = 5, 3
WAYS = ("search", "confirm", "longer")

_CONTEXT: Context | None = None


def run_seed(arch: str, seed: int) -> dict:
    """The function each way reports for one seed, with its true and its reported score."""
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT.arch != arch:
        _CONTEXT = Context(arch)
    context, unit = _CONTEXT, noise_unit(arch)
    start = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        expression = suggest_activation(trial).expression
        noise = np.random.default_rng([seed, trial.number]).normal(scale=unit)
        return context.table.value(expression) + noise

    def reported(expression: str, score: float) -> dict:
        return {"activation": expression, "true": context.table.value(expression), "score": score}

    def best_trial(study: optuna.Study) -> dict:
        return reported(study.best_trial.user_attrs["activation"], study.best_value)

    def searched(n_trials: int) -> optuna.Study:
        study = optuna.create_study(
            direction="maximize", sampler=SAMPLERS["aquasurf"](context, seed)
        )
        study.optimize(objective, n_trials=n_trials)
        return study

    study = searched(SEARCH_TRIALS)
    search = best_trial(study)
    report = confirm(study, objective, top=TOP, repeats=REPEATS)
    longer = searched(len(study.trials))
    first = [
        [t.user_attrs["activation"] for t in s.trials[:SEARCH_TRIALS]] for s in (study, longer)
    ]
    return {
        "seed": seed,
        "trials": len(study.trials),
        "same_search": first[0] == first[1],  # the longer search repeats the first 50 trials
        "search": search,
        "confirm": reported(report.best, report.records[0].mean),
        "longer": best_trial(longer),
        "verdict": report.verdict(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _job(job: tuple[str, int]) -> tuple[str, dict]:
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    return job[0], run_seed(*job)


def run(archs: list[str], seeds: int, workers: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    done = {(a, r["seed"]) for a in archs for r in _read(RESULTS / f"confirm_{a}.jsonl")}
    # Table-major order: a worker builds each table's context (its Fisher features) once.
    jobs = [(a, s) for a in archs for s in range(seeds) if (a, s) not in done]
    print(f"{len(jobs)} seeds to run ({len(done)} done), {workers} worker(s)", flush=True)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for arch, result in pool.imap_unordered(_job, jobs):
            with (RESULTS / f"confirm_{arch}.jsonl").open("a") as f:
                f.write(json.dumps(result) + "\n")
            regrets = " ".join(f"{w} {result[w]['true']:.4f}" for w in WAYS)
            print(
                f"{arch:>10} seed {result['seed']:>2}: true scores {regrets}; "
                f"{result['trials']} trials, {result['seconds']} s",
                flush=True,
            )


def summarise(archs: list[str]) -> None:
    print(
        f"\nTrue regret of the reported function (the table's best score minus the reported "
        f"function's table score), median over seeds [quartiles]; search: best of "
        f"{SEARCH_TRIALS} trials; confirm: then confirm(top={TOP}, repeats={REPEATS}); longer: "
        "search for as many trials as confirm trained in all. In noise units in brackets."
    )
    print(
        f"{'table':>10} {'unit':>7} {'seeds':>5} {'trials':>6} "
        + " ".join(f"{w:>29}" for w in WAYS)
        + "  confirm better by (units)"
    )
    lead_tables = 0
    at_most_everywhere = True
    for arch in archs:
        runs = _read(RESULTS / f"confirm_{arch}.jsonl")
        if not runs:
            continue
        best, unit = _table_scores(arch).max(), noise_unit(arch)
        regret = {w: np.array([best - r[w]["true"] for r in runs]) for w in WAYS}
        medians = {w: float(np.median(regret[w])) for w in WAYS}
        cells = []
        for w in WAYS:
            low, high = np.quantile(regret[w], [0.25, 0.75])
            cells.append(f"{medians[w]:.4f} ({medians[w] / unit:.2f}) [{low:.4f}-{high:.4f}]")
        leads = [(medians[w] - medians["confirm"]) / unit for w in ("search", "longer")]
        same = sum(r["same_search"] for r in runs)
        at_most_everywhere &= min(leads) >= -1e-9
        lead_tables += min(leads) >= 0.5
        print(
            f"{arch:>10} {unit:7.4f} {len(runs):>5} {np.median([r['trials'] for r in runs]):>6.0f} "
            + " ".join(f"{c:>29}" for c in cells)
            + f"  {leads[0]:.2f} than search, {leads[1]:.2f} than longer"
            + ("" if same == len(runs) else f"; longer repeats the search in {same} seeds only")
        )
    print(
        f"confirm at most the others' median regret on every table: "
        f"{'met' if at_most_everywhere else 'MISSED'}; lower than both by half a noise unit on "
        f"{lead_tables} table(s) ({'met' if lead_tables >= 2 else 'MISSED'}, target 2)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="all", help="a table, several (comma-separated), or all")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="summarise stored results")
    args = parser.parse_args()
    archs = list(ARCHITECTURES) if args.arch == "all" else args.arch.split(",")
    if not args.summary:
        run(archs, args.seeds, args.workers)
    summarise(archs)


if __name__ == "__main__":
    main()
