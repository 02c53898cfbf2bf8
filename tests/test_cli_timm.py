"""``aquasurf optimize`` on a ``model()`` file with a real timm model, its data and a Fisher
batch: the real CLI in a subprocess, on the CPU, on SQLite."""

from __future__ import annotations

import textwrap

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from optuna_aquasurf._sampler import DEFAULT_BASELINES
from tests.test_cli import aquasurf, trials

pytest.importorskip("timm")

SPACE = [
    *DEFAULT_BASELINES,
    "mul(x,tanh(x))",
    "abs(x)",
    "min(x,tanh(x))",
    "mul(x,erf(x))",
]

TIMM_FILE = textwrap.dedent(
    f"""
    import timm
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    SPACE = {SPACE!r}
    EPOCHS = 1

    def model():
        return timm.create_model("test_resnet", num_classes=4, in_chans=1)

    def _images(n, seed):
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 4, (n,), generator=generator)
        images = labels.view(-1, 1, 1, 1) + torch.randn(n, 1, 24, 24, generator=generator)
        return TensorDataset(images, labels)

    def data():
        return DataLoader(_images(64, 1), batch_size=16), DataLoader(_images(32, 2), 32)

    def fisher_batch():
        return _images(8, 3).tensors
    """
)


def test_timm_model_file_with_fisher_features(tmp_path):
    (tmp_path / "timm_small.py").write_text(TIMM_FILE)
    result = aquasurf("optimize", "timm_small.py", "--n-trials", "10", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Fisher features of the model" in result.stderr
    assert "Activations of model(): " in result.stderr and " replaced" in result.stderr
    assert "computed in the background" in result.stderr
    done = trials(tmp_path, "timm_small")
    assert len(done) == 10 and all(t.state == TrialState.COMPLETE for t in done)
    assert {t.user_attrs["activation"] for t in done[:8]} == set(SPACE[:8])  # the baselines
    assert len({t.user_attrs["activation"] for t in done}) == 10

    # The map was made with the model's Fisher features, all 12 functions of them.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'aquasurf.db'}")
    with engine.connect() as connection:
        chunks = connection.execute(sa.text("select count(*) from aquasurf_fisher_chunks"))
        assert chunks.scalar() == 1
        maps = connection.execute(sa.text("select count(*) from aquasurf_embeddings"))
        assert maps.scalar() == 1
    study = optuna.load_study(study_name="timm_small", storage=f"sqlite:///{tmp_path}/aquasurf.db")
    assert study.user_attrs["aquasurf"]["map"]

    # The plots need only the database.
    (tmp_path / "timm_small.py").unlink()
    result = aquasurf("plot", "--out", "plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plots" / "timm_small_map.png").is_file()
