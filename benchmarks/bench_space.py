"""Enumerate and deduplicate a search space of over a million names; print time and peak memory.

    python benchmarks/bench_space.py

Target on 2 cores: under 60 s and under 4 GB.
"""

from __future__ import annotations

import argparse
import resource
import time

from optuna_aquasurf import ALL_UNARY, SearchSpace

DEFAULT_SCHEMAS = [
    "n-ary(unary(x),unary(x),unary(x))",
    "binary(unary(x),binary(unary(x),unary(x)))",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("schemas", nargs="*", default=DEFAULT_SCHEMAS)
    args = parser.parse_args()
    start = time.perf_counter()
    space = SearchSpace.from_schemas(args.schemas, unary=ALL_UNARY)
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"schemas          {' + '.join(args.schemas)} ({len(ALL_UNARY)} unary operators)")
    print(f"names            {space.n_names:,}")
    print(
        f"unique functions {len(space):,} ({int(space.finite.sum()):,} finite on the probe points)"
    )
    print(f"seconds          {seconds:.1f}   (target < 60)")
    print(f"peak memory      {peak_gib:.2f} GiB (target < 4)")


if __name__ == "__main__":
    main()
