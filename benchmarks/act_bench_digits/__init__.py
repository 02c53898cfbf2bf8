"""Act-Bench-Digits: a tabular benchmark of the 2,918 functions of ``binary(unary(x),unary(x))``
trained on scikit-learn digits (see README.md).

    from benchmarks.act_bench_digits import load_act_bench_digits
    table = load_act_bench_digits("cnn")
    table.lookup("max(relu(x),zero(x))")["val_acc"]
"""

from benchmarks.act_bench_digits._files import ARCHITECTURES, COLUMNS, DATA_DIR
from benchmarks.act_bench_digits._table import (
    ActBenchTable,
    IncompleteBenchmarkError,
    load_act_bench_digits,
)

__all__ = [
    "ARCHITECTURES",
    "COLUMNS",
    "DATA_DIR",
    "ActBenchTable",
    "IncompleteBenchmarkError",
    "load_act_bench_digits",
]
