"""Act-Bench-Digits: the training run, the resumable builder and the loader (fast checks)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the root

from benchmarks.act_bench_digits import (  # noqa: E402
    IncompleteBenchmarkError,
    load_act_bench_digits,
)
from benchmarks.act_bench_digits._files import COLUMNS, read_rows  # noqa: E402
from benchmarks.act_bench_digits._train import TrainConfig, train_function  # noqa: E402
from benchmarks.act_bench_digits.build import build, format_row, main, paper_space  # noqa: E402

QUICK = TrainConfig(epochs=2, batch_size=64, lr=3e-3)
TINY = TrainConfig(epochs=1, batch_size=64, lr=3e-3)


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def space():
    return paper_space()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A main table of the first 6 functions with 1 epoch."""
    data_dir = tmp_path_factory.mktemp("actbench")
    build("cnn", limit=6, data_dir=data_dir, config=TINY, log=quiet)
    return data_dir


def test_training_separates_relu_from_zero():
    relu = train_function("cnn", "max(relu(x),zero(x))", config=QUICK)
    zero = train_function("cnn", "add(zero(x),zero(x))", config=QUICK)
    assert relu["val_acc"] > 0.85 and relu["test_acc"] > 0.85
    assert zero["val_acc"] < 0.2
    assert not relu["diverged"] and not zero["diverged"]
    assert relu["epochs"] == 2 and relu["seconds"] > 0


def test_vit_separates_relu_from_zero():
    config = TrainConfig(epochs=3, batch_size=64, lr=5e-3)
    relu = train_function("vit", "max(relu(x),zero(x))", config=config)
    zero = train_function("vit", "add(zero(x),zero(x))", config=config)
    assert relu["val_acc"] > 0.35  # 0.47 after 3 epochs (0.87 after the 10 of the benchmark)
    assert zero["val_acc"] < 0.2


def test_regression_scores_minus_log10_mse_and_diverges_to_the_mean_score(tmp_path):
    config = TrainConfig(epochs=5, batch_size=64, lr=3e-3)
    relu = train_function("regression", "max(relu(x),zero(x))", config=config)
    zero = train_function("regression", "add(zero(x),zero(x))", config=config)
    assert relu["val_score"] > 0.5  # MSE under 0.32 of the target's variance
    assert zero["val_score"] == 0.0  # no better than the mean
    assert "val_acc" not in relu
    diverged = train_function("regression", "div(identity(x),relu(x))", config=config)
    assert diverged["diverged"] == 1 and diverged["val_score"] == 0.0
    build("regression", limit=2, data_dir=tmp_path, config=TINY, log=quiet)
    table = load_act_bench_digits("regression", data_dir=tmp_path, allow_incomplete=True)
    assert table.score_column == "val_score" and len(table.score) == 2
    assert table.value(table.expressions[0]) == table.score[0]


def test_training_is_reproducible_and_seeded():
    a = train_function("cnn", "add(tanh(x),zero(x))", seed=1, config=TINY)
    b = train_function("cnn", "add(tanh(x),zero(x))", seed=1, config=TINY)
    c = train_function("cnn", "add(tanh(x),zero(x))", seed=2, config=TINY)
    assert a["val_loss"] == b["val_loss"]
    assert a["val_loss"] != c["val_loss"]


def test_divergence_stops_and_records_chance():
    # x / relu(x) is x / 0 for every negative input: the first loss is NaN.
    result = train_function("cnn", "div(identity(x),relu(x))", config=QUICK)
    assert result["diverged"] == 1
    assert result["val_acc"] == result["test_acc"] == 0.1
    assert np.isnan(result["val_loss"])
    assert "nan" in format_row(0, "div(identity(x),relu(x))", result)


def test_build_writes_rows_in_order_and_resume_skips_them(built, space):
    rows = read_rows(built / "cnn.csv")
    assert [int(r["index"]) for r in rows] == list(range(6))
    assert [r["expression"] for r in rows] == [space[i].expression for i in range(6)]
    assert (built / "groups.tsv.gz").exists()
    before = (built / "cnn.csv").read_text()
    messages = []
    build("cnn", limit=6, data_dir=built, config=TINY, log=messages.append)
    assert (built / "cnn.csv").read_text() == before  # nothing trained again
    assert f"6 of {len(space)} functions done, 0 to train" in messages[0]


def test_resume_after_a_kill_mid_row(tmp_path):
    build("cnn", limit=2, data_dir=tmp_path, config=TINY, log=quiet)
    with open(tmp_path / "cnn.csv", "a") as f:
        f.write('2,"add(zero(x),ident')  # a row cut short by kill -9
    main(["--arch", "cnn", "--limit", "3", "--epochs", "1", "--data-dir", str(tmp_path)])
    rows = read_rows(tmp_path / "cnn.csv")
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    assert rows[2]["expression"] == "add(zero(x),identity(x))"
    assert all(len(r) == len(COLUMNS) and None not in r.values() for r in rows)


def test_resume_refuses_other_settings(tmp_path):
    build("cnn", limit=1, data_dir=tmp_path, config=TINY, log=quiet)
    with pytest.raises(SystemExit, match="epochs"):
        build("cnn", limit=1, data_dir=tmp_path, config=QUICK, log=quiet)


def test_incomplete_table_gives_a_clear_error(built, space):
    with pytest.raises(IncompleteBenchmarkError) as error:
        load_act_bench_digits("cnn", data_dir=built)
    message = str(error.value)
    assert f"holds 6 of the {len(space)} functions" in message
    assert "python -m benchmarks.act_bench_digits.build --arch cnn" in message


def test_missing_table_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m benchmarks.act_bench_digits.build"):
        load_act_bench_digits("vit", data_dir=tmp_path)


def test_loader_looks_up_any_member(built, space):
    table = load_act_bench_digits("cnn", data_dir=built, allow_incomplete=True)
    assert len(table) == 6 and not table.complete
    assert table["val_acc"].dtype == np.float64 and table.val_acc is table["val_acc"]
    assert table["diverged"].dtype == bool and table["index"].tolist() == list(range(6))
    assert table.expressions == tuple(space[i].expression for i in range(6))
    group = space[0]  # the zero function: many member names
    assert len(group.equivalents) > 10
    rows = [table.lookup(name) for name in group.equivalents]
    assert all(row == rows[0] for row in rows)
    assert rows[0]["index"] == 0 and rows[0]["expression"] == group.expression
    assert table.value("min(relu(x), zero(x))") == table["val_acc"][0]  # spaces are ignored
    assert table.members("sub(one(x),one(x))") == group.equivalents
    # Not a member name, but the same function as group 2, add(zero(x),identity(x)).
    assert table.lookup("identity(x)")["index"] == 2
    assert "add(identity(x),zero(x))" in table
    with pytest.raises(KeyError, match="does not hold"):
        table.lookup("max(relu(x),zero(x))")  # a function beyond the 6 built
    with pytest.raises(KeyError, match="computes none"):
        table.lookup("tanh(tanh(x))")
    with pytest.raises(ValueError):
        table["val_acc"][0] = 1.0  # read-only


def test_noise_subset_and_its_table(tmp_path, space):
    build("cnn", seed=2, limit=2, data_dir=tmp_path, config=TINY, log=quiet)
    meta = json.loads((tmp_path / "cnn_seed2.json").read_text())
    assert meta["subset"] == "noise" and len(meta["indices"]) == 100
    assert all(space[i].finite for i in meta["indices"])
    with pytest.raises(IncompleteBenchmarkError, match="holds 2 of the 100 functions.*--seed 2"):
        load_act_bench_digits("cnn", seed=2, data_dir=tmp_path)
    table = load_act_bench_digits("cnn", seed=2, data_dir=tmp_path, allow_incomplete=True)
    assert table["index"].tolist() == meta["indices"][:2]


@pytest.mark.parametrize("arch", ["cnn", "vit", "resnet", "regression"])
def test_the_bundled_priors_are_the_tables(arch, tmp_path):
    from benchmarks.act_bench_digits.export_priors import PRIOR_DIR, export

    assert export(arch, tmp_path).read_bytes() == (PRIOR_DIR / f"{arch}.csv.gz").read_bytes()
