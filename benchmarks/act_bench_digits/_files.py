"""File names and the reading of result files, shared by the builder and the loader (no torch)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

ARCHITECTURES = ("cnn", "vit", "resnet", "regression")
#: Architectures whose task is a regression: their score columns are ``*_score`` (-log10 of the
#: mean squared error), not ``*_acc``.
REGRESSION_ARCHITECTURES = ("regression",)
DATA_DIR = Path(__file__).resolve().parent / "data"
GROUPS_FILE = "groups.tsv.gz"
SPACE_SCHEMAS = ["binary(unary(x),unary(x))"]
#: Seed of the main table (initial weights and batch order); the noise re-runs use another one.
MAIN_SEED = 1
NOISE_SIZE = 100

COLUMNS = (
    "index",
    "expression",
    "train_acc",
    "train_loss",
    "val_acc",
    "val_loss",
    "test_acc",
    "test_loss",
    "best_val_acc",
    "best_epoch",
    "epochs",
    "diverged",
    "seconds",
    "cpu_seconds",
)
INT_COLUMNS = ("index", "best_epoch", "epochs")
BOOL_COLUMNS = ("diverged",)


def metric_of(arch: str) -> str:
    """The stem of an architecture's score columns: ``acc`` (accuracy) or ``score`` (regression)."""
    return "score" if arch in REGRESSION_ARCHITECTURES else "acc"


def columns_of(arch: str) -> tuple[str, ...]:
    """The header of an architecture's result files."""
    metric = metric_of(arch)
    return tuple(name.replace("_acc", f"_{metric}") for name in COLUMNS)


def result_paths(arch: str, seed: int, data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """The result table and its metadata: ``cnn.csv``/``cnn.json``, ``cnn_seed2.csv``/..."""
    stem = arch if seed == MAIN_SEED else f"{arch}_seed{seed}"
    return Path(data_dir) / f"{stem}.csv", Path(data_dir) / f"{stem}.json"


def build_command(arch: str, seed: int = MAIN_SEED, data_dir: Path | None = None) -> str:
    command = f"python -m benchmarks.act_bench_digits.build --arch {arch}"
    if seed != MAIN_SEED:
        command += f" --seed {seed}"
    else:
        command += " --workers 2"
    if data_dir is not None and Path(data_dir).resolve() != DATA_DIR:
        command += f" --data-dir {data_dir}"
    return command


def read_rows(
    path: Path, repair: bool = False, columns: tuple[str, ...] = COLUMNS
) -> list[dict[str, str]]:
    """The finished rows of a result file, first occurrence of each index, in file order.

    A last line without its newline is a row cut short by a kill: it is ignored, and with
    ``repair`` cut off the file so that appending continues on a fresh line.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        keep = text.rfind("\n") + 1
        text = text[:keep]
        if repair:
            with open(path, "r+b") as f:
                f.truncate(len(text.encode()))
                f.flush()
                os.fsync(f.fileno())
    if not text:
        return []
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != columns:
        raise ValueError(f"{path} does not start with the header {','.join(columns)}")
    rows, seen = [], set()
    for row in reader:
        if row["index"] in seen:
            continue
        seen.add(row["index"])
        rows.append(row)
    return rows
