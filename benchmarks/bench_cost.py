"""What activation functions cost: measured on the paper space, and the static estimate.

    python benchmarks/bench_cost.py              # the paper space: seconds; estimate vs measure
    python benchmarks/bench_cost.py --operators  # each operator's cost (OPERATOR_COSTS)

A cost is the forward and backward time of the activation alone on 2**16 float32 elements, over
relu's, on one CPU thread (``optuna_aquasurf._cost``). Target: the paper space in about a minute.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from optuna_aquasurf import PAPER_UNARY, SearchSpace
from optuna_aquasurf._cost import estimated_cost, measure_costs
from optuna_aquasurf._operators import ALL_BINARY, ALL_NARY, ALL_UNARY


def operator_costs() -> None:
    """Print each built-in operator's cost applied to ``x``, as a dict literal (the median of 5
    measurements of 5 passes each)."""
    expressions = (
        [f"{u}(x)" for u in ALL_UNARY]
        + [f"{b}(x,x)" for b in ALL_BINARY]
        + [f"{n}(x,x,x)" for n in ALL_NARY]
    )
    costs = np.median([measure_costs(expressions, repeats=5) for _ in range(5)], axis=0)
    print("OPERATOR_COSTS = {")
    for expression, cost in zip(expressions, costs):
        print(f'    "{expression.split("(")[0]}": {cost:.2f},')
    print("}")


def paper_space() -> None:
    from scipy.stats import spearmanr

    space = SearchSpace.from_schemas(["binary(unary(x),unary(x))"], unary=PAPER_UNARY)
    start = time.perf_counter()
    measured = measure_costs(space.expressions)
    seconds = time.perf_counter() - start
    estimated = np.array([estimated_cost(e) for e in space.expressions])
    print(
        f"paper space, {len(space)} functions: measured in {seconds:.1f} s; cost median "
        f"{np.median(measured):.2f}, 90th percentile {np.quantile(measured, 0.9):.2f}, max "
        f"{measured.max():.2f} relu passes; functions at most 1.5: {(measured <= 1.5).sum()}, "
        f"at most 3: {(measured <= 3).sum()}\n"
        f"static estimate against the measure: Spearman "
        f"{spearmanr(estimated, measured).statistic:.3f}, median ratio "
        f"{np.median(estimated / measured):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operators", action="store_true", help="each operator's cost")
    args = parser.parse_args()
    torch.set_num_threads(1)
    operator_costs() if args.operators else paper_space()


if __name__ == "__main__":
    main()
