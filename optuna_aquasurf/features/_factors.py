"""The Kronecker factors of a layer: their sums while captured, and the matrices decomposed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class LayerFactors:
    """The Kronecker factors of one layer, reduced to the smaller Gram side where it is smaller.

    ``a`` (``groups x m x m``) has the eigenvalues of ``A`` except for ``zeros_a`` further zeros;
    the same for ``g``.
    """

    name: str
    num_weights: int
    groups: int
    a: torch.Tensor
    zeros_a: int
    g: torch.Tensor
    zeros_g: int

    def candidate(self, k: int, stack: int) -> LayerFactors:
        """The factors of copy ``k`` of ``stack`` stacked candidates (their blocks ``k``)."""
        if stack == 1:
            return self
        rows = slice(k * self.groups, (k + 1) * self.groups)
        return replace(self, a=self.a[rows], g=self.g[rows])


@dataclass
class FactorSum:
    """Accumulates ``sum x^T x`` over rows ``x`` of ``groups`` independent blocks.

    With ``bias``, every row gets a homogeneous 1 appended, implicitly: the extra row and column
    of the sum are the column sums and the row count. Adds with at least ``dim`` rows go straight
    into the sum; shorter ones are kept, so a factor with fewer rows than columns in total is
    decomposed through its (smaller) Gram matrix. ``empty`` is the ``groups x 0 x 0`` matrix of a
    factor that receives no rows (a layer whose output the loss does not depend on).
    """

    dim: int
    empty: torch.Tensor
    bias: bool = False
    rows: int = 0
    cov: torch.Tensor | None = None
    sums: torch.Tensor | None = None
    pending: list[torch.Tensor] = field(default_factory=list)

    def add(self, x: torch.Tensor) -> None:
        self.rows += x.shape[1]
        if x.shape[1] >= self.dim:
            self._accumulate(x)
        else:
            self.pending.append(x)

    def _accumulate(self, x: torch.Tensor) -> None:
        cov, sums = x.mT @ x, x.sum(dim=1)
        self.cov = cov if self.cov is None else self.cov + cov
        self.sums = sums if self.sums is None else self.sums + sums

    def reduced(self, scale: float) -> tuple[torch.Tensor, int]:
        """A matrix whose eigenvalues, with ``zeros`` more zeros, are those of ``scale * sum``."""
        if self.cov is None and self.rows < self.dim:
            if not self.pending:
                return self.empty, self.dim
            x = torch.cat(self.pending, dim=1)
            gram = x @ x.mT + 1 if self.bias else x @ x.mT
            return scale * gram, self.dim - self.rows
        for x in self.pending:
            self._accumulate(x)
        self.pending = []
        if not self.bias:
            return scale * self.cov, 0
        groups, width = self.sums.shape
        full = self.cov.new_empty(groups, width + 1, width + 1)
        full[:, :width, :width] = self.cov
        full[:, :width, width] = self.sums
        full[:, width, :width] = self.sums
        full[:, width, width] = self.rows
        return scale * full, 0
