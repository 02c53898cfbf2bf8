"""The Fisher-spectrum feature: per layer, the CDF of a histogram of log-eigenvalues (K-FAC).

For a layer with factors ``A`` (eigenvalues ``lambda``) and ``G`` (eigenvalues ``mu``), the Fisher
block ``A (x) G`` has the eigenvalues ``lambda_i * mu_j``, one per weight (biases included; per
group for grouped convolutions). Their logs ``log lambda_i + log mu_j`` are histogrammed on
``[-100, 100]`` and the histogram turned into a CDF (cumulative, ending at exactly 1); the layers'
CDFs are concatenated in module order.

Floor: eigenvalues at or below ``max(eigenvalues of the factor) * d * eps`` (the numerical-rank
tolerance of ``numpy.linalg.matrix_rank``, ``eps`` of the factor's dtype) count as exact zeros, and
every log-eigenvalue is clipped to ``[-50, 50]``; zeros thus become ``-50``, so every sum lies in
``[-100, 100]`` and every weight is counted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from optuna_aquasurf.features._decompose import LayerSpectrum
from optuna_aquasurf.features._kfac import kfac_spectra
from optuna_aquasurf.features._settings import LossFunction, ProbeSettings

#: Range of the histogram of log-eigenvalue sums; each factor's log-eigenvalues are clipped to half.
LOG_RANGE = 100.0
#: Largest number of pairwise sums formed at once.
CHUNK = 1 << 22

Bins = int | Callable[[int], int] | None


def fisher_features(
    model: nn.Module,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    targets: torch.Tensor,
    loss_fn: LossFunction | None = None,
    fisher: str = "empirical",
    bins: Bins = None,
    seed: int = 0,
) -> np.ndarray:
    """The Fisher-spectrum feature vector of a model on one batch.

    Parameters
    ----------
    model, inputs, targets, loss_fn, fisher, seed
        As in :func:`kfac_eigenvalues`; ``loss_fn`` must return the batch-mean loss.
    bins
        Histogram bins per layer: ``None`` for ``max(1, num_weights // 100)`` (the method's
        choice), an int for the same number in every layer, or a callable
        ``bins(num_weights) -> int``.

    Returns
    -------
    numpy.ndarray
        float32 vector of length ``sum(bins(num_weights) for each layer)``; each layer's part is
        nondecreasing and ends at 1.

    Raises
    ------
    DivergedError
        When the model outputs, the loss or a Kronecker factor is not finite (the message names the
        layer or the loss).

    Notes
    -----
    Eigenvalues below the numerical-rank tolerance ``max(eigenvalues) * d * eps`` of their factor
    count as zeros, and log-eigenvalues are clipped to ``[-50, 50]`` (zeros become ``-50``), so
    every one of the ``num_weights`` sums falls in ``[-100, 100]``.
    """
    spectra = kfac_spectra(model, ProbeSettings(inputs, targets, loss_fn, fisher, seed))
    return spectra_features(spectra, bins)


def spectra_features(spectra: list[LayerSpectrum], bins: Bins = None) -> np.ndarray:
    """Concatenated per-layer CDFs of the spectra (see :func:`fisher_features`)."""
    parts = [layer_cdfs([s], bin_count(bins, s.num_weights))[0] for s in spectra]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def bin_count(bins: Bins, num_weights: int) -> int:
    """The number of histogram bins of a layer with ``num_weights`` weights."""
    if bins is None:
        count = max(1, num_weights // 100)
    else:
        count = bins if isinstance(bins, (int, np.integer)) else bins(num_weights)
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"bins must give a positive int, got {count!r} for {num_weights} weights")
    return int(count)


def layer_cdfs(spectra: list[LayerSpectrum], n_bins: int) -> np.ndarray:
    """CDFs (float32, ``len(spectra) x n_bins``) of the log-eigenvalue sums of one layer.

    ``spectra`` are the same layer's in several candidates (factors of the same sizes).
    """
    first = spectra[0]
    groups = first.eig_a.shape[0]
    log_a, count_a = _log_spectrum(torch.cat([s.eig_a for s in spectra]), first.zeros_a)
    log_g, count_g = _log_spectrum(torch.cat([s.eig_g for s in spectra]), first.zeros_g)
    totals = (count_a.sum(axis=1) * count_g.sum(axis=1)).reshape(len(spectra), groups).sum(axis=1)
    if (totals != first.num_weights).any():
        raise RuntimeError(
            f"layer {first.name!r}: {totals.max():.0f} eigenvalues for {first.num_weights} weights"
        )
    # each (candidate, group) block counts into its candidate's bins
    offsets = (np.arange(log_a.shape[0]) // groups * n_bins)[:, None, None]
    hist = np.zeros(len(spectra) * n_bins)
    step = max(1, CHUNK // (log_a.shape[0] * log_g.shape[1]))
    for start in range(0, log_a.shape[1], step):
        sums = log_a[:, start : start + step, None] + log_g[:, None, :]
        index = np.floor((sums + LOG_RANGE) * (n_bins / (2 * LOG_RANGE)))
        index = np.clip(index, 0, n_bins - 1).astype(np.intp) + offsets
        weights = count_a[:, start : start + step, None] * count_g[:, None, :]
        hist += np.bincount(index.ravel(), weights.ravel(), minlength=hist.size)
    return (np.cumsum(hist.reshape(len(spectra), n_bins), axis=1) / totals[:, None]).astype(
        np.float32
    )


def _log_spectrum(eigs: torch.Tensor, zeros: int) -> tuple[np.ndarray, np.ndarray]:
    """Clipped log-eigenvalues with multiplicities, ``(groups, m + 1)``, the zeros as one entry."""
    eps = torch.finfo(eigs.dtype).eps
    values = eigs.detach().cpu().double().numpy()
    if values.shape[1]:
        top = np.maximum(values.max(axis=1, keepdims=True), 0.0)
        values = np.where(values > top * (values.shape[1] + zeros) * eps, values, 0.0)
    half = LOG_RANGE / 2
    logs = np.empty((values.shape[0], values.shape[1] + 1))
    np.log(np.maximum(values, np.exp(-half)), out=logs[:, :-1])
    logs[:, -1] = -half
    np.minimum(logs, half, out=logs)
    counts = np.ones_like(logs)
    counts[:, -1] = zeros
    return logs, counts
