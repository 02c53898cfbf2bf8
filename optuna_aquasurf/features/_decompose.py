"""The eigenvalues of every Kronecker factor, batched over factors of the same size."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from optuna_aquasurf.features._diverged import DivergedError
from optuna_aquasurf.features._factors import LayerFactors


@dataclass
class LayerSpectrum:
    """The factors' eigenvalues of one layer, with their known zeros kept apart.

    ``eig_a`` (``groups x m_A``) with ``zeros_a`` further zero eigenvalues per group are the
    eigenvalues of ``A`` (``m_A + zeros_a = d_A``); the same for ``G``. The zeros come from the
    smaller-Gram-side shortcut (a factor of rank at most ``rows < d``).
    """

    name: str
    num_weights: int
    eig_a: torch.Tensor
    zeros_a: int
    eig_g: torch.Tensor
    zeros_g: int

    def full_a(self) -> torch.Tensor:
        return _with_zeros(self.eig_a, self.zeros_a)

    def full_g(self) -> torch.Tensor:
        return _with_zeros(self.eig_g, self.zeros_g)


def _with_zeros(eigs: torch.Tensor, zeros: int) -> torch.Tensor:
    padded = torch.cat([eigs.new_zeros(eigs.shape[0], zeros), eigs], dim=1)
    return padded.sort(dim=1).values


def decompose(factors: list[LayerFactors]) -> list[LayerSpectrum]:
    """Eigenvalues of every factor, batching ``eigvalsh`` over matrices of the same size.

    Raises
    ------
    DivergedError
        When a factor is not finite, or its eigendecomposition fails even in float64.
    """
    _check_finite(factors)
    eigs = {}
    for batch in _by_size(_matrices(0, factors)):
        stacked = torch.cat([m for _, m in batch])
        try:
            (values,) = _eigvalsh([stacked])
        except torch.linalg.LinAlgError:
            try:
                values = _careful_eigvalsh(stacked)
            except torch.linalg.LinAlgError as err:
                names = sorted({factors[i].name for (_, i, _), _ in batch})
                raise DivergedError(f"eigendecomposition failed for layers {names}: {err}") from err
        _split(batch, values, eigs)
    return _spectra(0, factors, eigs)


def decompose_stacked(
    candidates: list[list[LayerFactors] | DivergedError],
) -> list[list[LayerSpectrum] | DivergedError]:
    """:func:`decompose` of many candidates' factors, one ``eigvalsh`` call per size for all.

    A diverged candidate (given as its error, or with a factor that is not finite) gives its
    :class:`DivergedError`. When an eigendecomposition fails, every candidate is decomposed on
    its own, exactly as :func:`decompose` does.
    """
    results: list[list[LayerFactors] | DivergedError] = list(candidates)
    matrices = [
        entry
        for c, factors in enumerate(candidates)
        if not isinstance(factors, DivergedError)
        for entry in _matrices(c, factors)
    ]
    bad: dict[int, tuple[int, str]] = {}  # per candidate, its first factor that is not finite
    for batch in _by_size(matrices):
        finite = torch.isfinite(torch.cat([m for _, m in batch])).all(dim=(1, 2))
        flags, start = finite.tolist(), 0
        for (c, i, which), matrix in batch:
            start += matrix.shape[0]
            if not all(flags[start - matrix.shape[0] : start]):
                bad[c] = min(bad.get(c, (i, which)), (i, which))
    for c, (i, which) in bad.items():
        results[c] = _not_finite(which, candidates[c][i].name)
    eigs = {}
    try:
        good = [(key, m) for key, m in matrices if not isinstance(results[key[0]], DivergedError)]
        batches = _by_size(good)
        values = _eigvalsh([torch.cat([m for _, m in batch]) for batch in batches])
        for batch, batch_values in zip(batches, values):
            _split(batch, batch_values, eigs)
    except torch.linalg.LinAlgError:
        return [_decompose_or_error(r) for r in results]
    return [
        r if isinstance(r, DivergedError) else _spectra(c, r, eigs) for c, r in enumerate(results)
    ]


def _decompose_or_error(factors: list[LayerFactors] | DivergedError):
    if isinstance(factors, DivergedError):
        return factors
    try:
        return decompose(factors)
    except DivergedError as err:
        return err


def _check_finite(factors: list[LayerFactors]) -> None:
    for layer in factors:
        for which, matrix in (("A", layer.a), ("G", layer.g)):
            if not torch.isfinite(matrix).all():
                raise _not_finite(which, layer.name)


def _not_finite(which: str, name: str) -> DivergedError:
    return DivergedError(f"the Kronecker factor {which} of layer {name!r} is not finite")


def _matrices(c: int, factors: list[LayerFactors]) -> list[tuple[tuple, torch.Tensor]]:
    """``((candidate, layer, "A" or "G"), matrix)`` of every factor of candidate ``c``."""
    return [
        ((c, i, which), matrix)
        for i, layer in enumerate(factors)
        for which, matrix in (("A", layer.a), ("G", layer.g))
    ]


def _by_size(matrices: list[tuple[tuple, torch.Tensor]]) -> list[list[tuple[tuple, torch.Tensor]]]:
    """The matrices grouped by size (dtype and device too), the empty ones left out."""
    by_size: dict[tuple, list] = {}
    for key, matrix in matrices:
        by_size.setdefault((matrix.shape[-1], matrix.dtype, matrix.device), []).append(
            (key, matrix)
        )
    return [batch for (size, _, _), batch in by_size.items() if size]


def _split(batch, values: torch.Tensor, eigs: dict) -> None:
    for (key, _), part in zip(batch, values.split([m.shape[0] for _, m in batch])):
        eigs[key] = part


def _spectra(c: int, factors: list[LayerFactors], eigs: dict) -> list[LayerSpectrum]:
    def values(i, which, matrix):
        key = (c, i, which)
        return eigs[key] if key in eigs else matrix.new_zeros(matrix.shape[0], 0)

    return [
        LayerSpectrum(
            f.name,
            f.num_weights,
            values(i, "A", f.a),
            f.zeros_a,
            values(i, "G", f.g),
            f.zeros_g,
        )
        for i, f in enumerate(factors)
    ]


def _eigvalsh(batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """``torch.linalg.eigvalsh`` of several batches; on the CPU, spread over the intra-op threads.

    LAPACK decomposes the matrices of a batch one after the other, and its own threads do little
    for matrices this small; a share of the batch per thread is about that many times faster.
    Meanwhile torch's intra-op threads are set to one, process-wide.
    """
    threads = torch.get_num_threads()
    if threads == 1 or any(b.device.type != "cpu" for b in batches):
        return [torch.linalg.eigvalsh(b) for b in batches]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            shares = [
                [pool.submit(torch.linalg.eigvalsh, share) for share in batch.chunk(threads)]
                for batch in batches
            ]
            return [torch.cat([future.result() for future in batch]) for batch in shares]
    finally:
        torch.set_num_threads(threads)


def _careful_eigvalsh(stacked: torch.Tensor) -> torch.Tensor:
    """Retry of a failed float32 ``eigvalsh`` (LAPACK may not converge): scaled, in float64."""
    scale = stacked.abs().amax(dim=(1, 2)).clamp(min=torch.finfo(stacked.dtype).tiny)
    values = torch.linalg.eigvalsh((stacked / scale[:, None, None]).double())
    return (values * scale[:, None].double()).to(stacked.dtype)
