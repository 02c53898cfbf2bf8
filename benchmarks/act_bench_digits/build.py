"""Build Act-Bench-Digits: train an architecture on scikit-learn digits with every function of the
paper's 2,918-function space ``binary(unary(x),unary(x))`` and store one row per function.

    python -m benchmarks.act_bench_digits.build --arch cnn --workers 2            # the main table
    python -m benchmarks.act_bench_digits.build --arch cnn --seed 2               # noise re-runs
    python -m benchmarks.act_bench_digits.build --arch cnn --seed 2 --report      # noise figures

The build is resumable: every finished function is appended (and fsync'ed) to the result file at
once; a restart skips the functions already there. See README.md for the columns.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from benchmarks.act_bench_digits._files import (
    ARCHITECTURES,
    DATA_DIR,
    GROUPS_FILE,
    MAIN_SEED,
    NOISE_SIZE,
    SPACE_SCHEMAS,
    build_command,
    columns_of,
    metric_of,
    read_rows,
    result_paths,
)
from benchmarks.act_bench_digits._train import (
    DEFAULT_CONFIGS,
    SPLIT_SEED,
    TrainConfig,
)

PROGRESS_EVERY = 50


def paper_space():
    from optuna_aquasurf import PAPER_UNARY, SearchSpace

    return SearchSpace.from_schemas(SPACE_SCHEMAS, unary=PAPER_UNARY)


def noise_indices(space) -> list[int]:
    """The functions re-trained with other seeds, in space order: among the functions finite at
    the probe points, the 100 whose representative expression has the smallest SHA-256 digest
    (a fixed pseudo-random pick that hardly moves if the space is regrouped)."""
    finite = [c for c in space if c.finite]
    finite.sort(key=lambda c: hashlib.sha256(c.expression.encode()).hexdigest())
    return sorted(c.index for c in finite[:NOISE_SIZE])


def write_groups(space, path: Path) -> None:
    """The space's equivalence groups: a header line, then ``index<TAB>member<TAB>member...``
    (the first member is the representative). Rewritten only if the space changed."""
    header = f"# {space.description} fingerprint={space.fingerprint}\n"
    if path.exists():
        with gzip.open(path, "rt") as f:
            if f.readline() == header:
                return
    text = io.StringIO()
    text.write(header)
    for candidate in space:
        text.write("\t".join([str(candidate.index), *candidate.equivalents]) + "\n")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text.getvalue().encode())
    os.replace(tmp, path)


def remap_rows(csv_path: Path, space, columns: tuple[str, ...], log=print) -> None:
    """Give the rows of a result file the indices of their expressions in ``space`` (after the
    space was regrouped); drop rows whose expression is not in it, or whose function already
    has a row. The file is replaced atomically."""
    kept, seen = [], set()
    for row in read_rows(csv_path, repair=True, columns=columns):
        try:
            index = space.index(row["expression"])
        except (KeyError, ValueError):
            log(f"dropped {row['expression']}: not in the space")
            continue
        if index in seen:
            log(f"dropped {row['expression']}: its function {index} already has a row")
            continue
        seen.add(index)
        kept.append({**row, "index": str(index)})
    write_rows(csv_path, kept, columns)


def write_rows(csv_path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    tmp = csv_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, csv_path)


def format_row(index: int, expression: str, metrics: dict, arch: str = "cnn") -> str:
    def number(value: float, digits: str) -> str:
        return "nan" if value != value else format(value, digits)

    values = {
        "index": str(index),
        "expression": expression,
        "best_epoch": str(metrics["best_epoch"]),
        "epochs": str(metrics["epochs"]),
        "diverged": str(metrics["diverged"]),
        "seconds": number(metrics["seconds"], ".3f"),
        "cpu_seconds": number(metrics["cpu_seconds"], ".3f"),
    }
    metric = metric_of(arch)
    for split in ("train", "val", "test"):
        values[f"{split}_{metric}"] = number(metrics[f"{split}_{metric}"], ".4f")
        values[f"{split}_loss"] = number(metrics[f"{split}_loss"], ".5g")
    values[f"best_val_{metric}"] = number(metrics[f"best_val_{metric}"], ".4f")
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow([values[c] for c in columns_of(arch)])
    return line.getvalue()


# ---------------------------------------------------------------- training in worker processes


def _init_worker(arch: str) -> None:
    import torch

    from benchmarks.act_bench_digits._train import train_function

    torch.set_num_threads(1)
    # Subnormal floats make some functions (exp of large negatives, ...) many times slower.
    torch.set_flush_denormal(True)
    # Load the data and warm torch up, so that the first function's time is not inflated.
    train_function(arch, "max(relu(x),zero(x))", config=TrainConfig(1, 256, 1e-3))


def _train_task(task: tuple) -> tuple[int, str, dict | None, str]:
    from benchmarks.act_bench_digits._train import train_function

    arch, index, expression, seed, config = task
    try:
        return index, expression, train_function(arch, expression, seed, config), ""
    except Exception:  # reported, not written: a restart retries it
        return index, expression, None, traceback.format_exc()


def _results(
    arch: str, tasks: list[tuple], workers: int
) -> Iterator[tuple[int, str, dict | None, str]]:
    if not tasks:
        return
    if workers <= 1:
        _init_worker(arch)
        for task in tasks:
            yield _train_task(task)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_worker, (arch,), maxtasksperchild=500) as pool:
        yield from pool.imap_unordered(_train_task, tasks, chunksize=1)


# ---------------------------------------------------------------- the build


def build(
    arch: str,
    seed: int = MAIN_SEED,
    workers: int = 1,
    limit: int | None = None,
    data_dir: Path = DATA_DIR,
    config: TrainConfig | None = None,
    subset: str | None = None,
    log=print,
) -> Path:
    """Train the missing functions of one result file; return its path."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    config = config or DEFAULT_CONFIGS[arch]
    columns, metric = columns_of(arch), metric_of(arch)
    subset = subset or ("all" if seed == MAIN_SEED else "noise")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    csv_path, meta_path = result_paths(arch, seed, data_dir)

    space = paper_space()
    write_groups(space, data_dir / GROUPS_FILE)
    noise = noise_indices(space)
    expected = list(range(len(space))) if subset == "all" else noise
    meta = {
        "arch": arch,
        "seed": seed,
        "split_seed": SPLIT_SEED,
        "subset": subset,
        "config": config.as_dict(),
        "space": space.description,
        "fingerprint": space.fingerprint,
        "n_functions": len(space),
        "indices": None if subset == "all" else expected,
    }
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        for key in ("arch", "seed", "split_seed", "subset", "config"):
            if old.get(key) != meta[key]:
                raise SystemExit(
                    f"{csv_path} was built with {key}={old.get(key)!r}, not {meta[key]!r}; "
                    "remove it (and its .json) to start over, or build with the same settings"
                )
        if old.get("fingerprint") != space.fingerprint:
            remap_rows(csv_path, space, columns, log)
            log(
                f"[{arch} seed {seed}] the space changed since {csv_path.name} was started "
                f"({old.get('n_functions')} -> {len(space)} functions): rows remapped by expression"
            )
    meta["status"] = "partial"
    _write_json(meta_path, meta)

    done = {int(row["index"]) for row in read_rows(csv_path, repair=True, columns=columns)}
    if not csv_path.exists() or csv_path.stat().st_size == 0:
        csv_path.write_text(",".join(columns) + "\n")
    wanted = expected if limit is None else expected[:limit]
    if limit is None and subset == "all":
        # The noise functions first, so that the noise figures are available early on.
        first = set(noise)
        wanted = noise + [i for i in wanted if i not in first]
    todo = [i for i in wanted if i not in done]
    log(
        f"[{arch} seed {seed}] {csv_path}: {len(done)} of {len(expected)} functions done, "
        f"{len(todo)} to train now with {workers} worker(s); config {config.as_dict()}",
    )
    tasks = [(arch, i, space[i].expression, seed, config) for i in todo]
    start = time.perf_counter()
    failed, cpu = 0, 0.0
    with open(csv_path, "a") as out:
        for k, (index, expression, metrics, error) in enumerate(_results(arch, tasks, workers), 1):
            if metrics is None:
                failed += 1
                log(f"[{arch} seed {seed}] FAILED {index} {expression}:\n{error}")
                continue
            out.write(format_row(index, expression, metrics, arch))
            out.flush()
            os.fsync(out.fileno())
            done.add(index)
            cpu += metrics["cpu_seconds"]
            if k % PROGRESS_EVERY == 0 or k == len(tasks):
                elapsed = time.perf_counter() - start
                left = (len(tasks) - k) * elapsed / k
                log(
                    f"[{arch} seed {seed}] {len(done)}/{len(expected)} done; this run {k} in "
                    f"{elapsed:.0f} s ({elapsed / k:.2f} s/function, CPU {cpu / k:.2f} s; "
                    f"{left / 60:.0f} min left); "
                    f"last {expression} val_{metric} {metrics[f'val_{metric}']:.4f}",
                )
    n_done = len(done & set(expected))
    complete = n_done == len(expected)
    rows = read_rows(csv_path, columns=columns)
    if complete:
        # Rewrite in space order (atomically: the old file stays whole until the rename).
        rows.sort(key=lambda row: int(row["index"]))
        write_rows(csv_path, rows, columns)
    seconds = np.array([float(r["seconds"]) for r in rows])
    cpu_seconds = np.array([float(r["cpu_seconds"]) for r in rows])
    meta.update(
        status="complete" if complete else "partial",
        n_rows=len(rows),
        n_diverged=sum(r["diverged"] == "1" for r in rows),
        train_seconds_total=round(float(seconds.sum()), 1),
        train_seconds_mean=round(float(seconds.mean()), 3) if len(rows) else None,
        cpu_seconds_total=round(float(cpu_seconds.sum()), 1),
        cpu_seconds_mean=round(float(cpu_seconds.mean()), 3) if len(rows) else None,
    )
    import torch

    meta["torch"] = torch.__version__
    _write_json(meta_path, meta)
    log(
        f"[{arch} seed {seed}] {'complete' if complete else 'partial'}: {n_done} of "
        f"{len(expected)} functions in {csv_path}"
        + (f"; {failed} failed (rerun to retry)" if failed else "")
    )
    if not complete and limit is None:
        log(f"continue with: {build_command(arch, seed)}")
    return csv_path


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".jsontmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- noise figures

#: A function counts as good in the noise figures above this score in both runs.
GOOD_SCORE = {"acc": 0.5, "score": 1.0}


def noise_figures(arch: str, seed: int, data_dir: Path = DATA_DIR) -> dict:
    """Compare the re-runs of ``seed`` with the main table on the functions both hold."""
    from scipy.stats import pearsonr, spearmanr

    columns, metric = columns_of(arch), metric_of(arch)
    main_rows = read_rows(result_paths(arch, MAIN_SEED, data_dir)[0], columns=columns)
    other_rows = read_rows(result_paths(arch, seed, data_dir)[0], columns=columns)
    main = {int(r["index"]): r for r in main_rows}
    other = {int(r["index"]): r for r in other_rows}
    common = sorted(set(main) & set(other))
    figures: dict = {"arch": arch, "seeds": [MAIN_SEED, seed], "pairs": len(common)}
    if not common:
        return figures
    a = np.array([float(main[i][f"val_{metric}"]) for i in common])
    b = np.array([float(other[i][f"val_{metric}"]) for i in common])
    ta = np.array([float(main[i][f"test_{metric}"]) for i in common])
    tb = np.array([float(other[i][f"test_{metric}"]) for i in common])
    div_a = np.array([main[i]["diverged"] == "1" for i in common])
    div_b = np.array([other[i]["diverged"] == "1" for i in common])
    trained = ~div_a & ~div_b
    figures["diverged_in_both"] = int((div_a & div_b).sum())
    figures["diverged_in_one"] = int((div_a ^ div_b).sum())
    figures["trained_in_both"] = int(trained.sum())

    def describe(mask: np.ndarray, prefix: str) -> None:
        if mask.sum() < 3:
            return
        d = a[mask] - b[mask]
        figures[f"{prefix}val_{metric}_diff_std"] = float(np.std(d, ddof=1))
        figures[f"{prefix}val_{metric}_diff_mean_abs"] = float(np.mean(np.abs(d)))
        figures[f"{prefix}val_{metric}_diff_median_abs"] = float(np.median(np.abs(d)))
        figures[f"{prefix}val_{metric}_diff_max_abs"] = float(np.max(np.abs(d)))
        figures[f"{prefix}val_{metric}_spearman"] = float(spearmanr(a[mask], b[mask])[0])
        figures[f"{prefix}val_{metric}_pearson"] = float(pearsonr(a[mask], b[mask])[0])
        figures[f"{prefix}test_{metric}_spearman"] = float(spearmanr(ta[mask], tb[mask])[0])

    describe(np.ones(len(common), bool), "all_")
    describe(trained, "trained_")
    good = trained & (a > GOOD_SCORE[metric]) & (b > GOOD_SCORE[metric])
    figures["good_in_both"] = int(good.sum())
    describe(good, "good_")
    return figures


def print_noise_figures(arch: str, seed: int, data_dir: Path = DATA_DIR, log=print) -> dict:
    figures = noise_figures(arch, seed, data_dir)
    log(
        f"[{arch}] noise, seed {MAIN_SEED} vs seed {seed}: {figures['pairs']} functions in both "
        "files (all_: every pair; trained_: neither run diverged; good_: "
        f"val_{metric_of(arch)} > {GOOD_SCORE[metric_of(arch)]} in both)"
    )
    for key, value in figures.items():
        if key not in ("arch", "seeds", "pairs"):
            log(f"  {key:32s} {value:.4f}" if isinstance(value, float) else f"  {key:32s} {value}")
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.act_bench_digits.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--arch", choices=ARCHITECTURES, required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes, one thread each")
    parser.add_argument("--limit", type=int, default=None, help="only the first K functions")
    parser.add_argument(
        "--seed",
        type=int,
        default=MAIN_SEED,
        help=f"weights and batch order; {MAIN_SEED} is the main table, any other one re-trains "
        f"the {NOISE_SIZE} noise functions into <arch>_seed<S>.csv",
    )
    parser.add_argument("--subset", choices=("all", "noise"), default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override (for quick checks)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--report", action="store_true", help="only print the noise figures")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(time.strftime("%H:%M:%S"), message, flush=True)

    if args.report:
        print_noise_figures(args.arch, args.seed, args.data_dir, log)
        return
    config = DEFAULT_CONFIGS[args.arch]
    if args.epochs is not None:
        config = TrainConfig(args.epochs, config.batch_size, config.lr, config.weight_decay)
    build(args.arch, args.seed, args.workers, args.limit, args.data_dir, config, args.subset, log)
    if args.seed != MAIN_SEED:
        print_noise_figures(args.arch, args.seed, args.data_dir, log)


if __name__ == "__main__":
    sys.exit(main())
