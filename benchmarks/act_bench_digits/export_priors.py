"""Write the Act-Bench-Digits tables that ship with the package as priors.

    python -m benchmarks.act_bench_digits.export_priors

One gzipped CSV per architecture in ``optuna_aquasurf/_data/act_bench_digits/``: each function's
expression and main score (empty where its training diverged), for
``AquaSurfSampler(prior=["act-bench-digits:cnn"])``. The files are byte-for-byte reproducible.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from benchmarks.act_bench_digits._files import ARCHITECTURES
from benchmarks.act_bench_digits._table import load_act_bench_digits

PRIOR_DIR = Path(__file__).resolve().parents[2] / "optuna_aquasurf" / "_data" / "act_bench_digits"


def prior_rows(arch: str) -> list[tuple[str, str]]:
    """(expression, score) of every function of a table; the score empty where it diverged."""
    table = load_act_bench_digits(arch)
    return [
        (expression, "" if diverged else repr(float(score)))
        for expression, score, diverged in zip(table.expressions, table.score, table.diverged)
    ]


def export(arch: str, directory: Path = PRIOR_DIR) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("expression", "score"))
    writer.writerows(prior_rows(arch))
    path = Path(directory) / f"{arch}.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text.getvalue().encode())
    return path


def main() -> None:
    for arch in ARCHITECTURES:
        print(f"wrote {export(arch)}")


if __name__ == "__main__":
    main()
