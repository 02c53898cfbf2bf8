"""The record of what :func:`swap_activations` did at every activation site."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

REPLACED = "replaced"
KEPT_GATE = "kept (gate)"
KEPT_POLICY = "kept (policy)"
FUNCTIONAL_REWRITTEN = "functional-rewritten"
FUNCTIONAL_LEFT = "functional-left"
ACTIONS = (REPLACED, KEPT_GATE, KEPT_POLICY, FUNCTIONAL_REWRITTEN, FUNCTIONAL_LEFT)


@dataclass(frozen=True)
class Site:
    """One activation site.

    Attributes
    ----------
    path
        Module path in the swapped model (``model.get_submodule(path)``): the new activation
        module for ``"replaced"`` and ``"functional-rewritten"``, the kept module for ``"kept
        ..."``, and the module whose ``forward`` makes the call for ``"functional-left"``
        (``""`` is the model itself).
    original
        Class name of the original activation module, or the function called (``"F.relu"``).
    action
        One of ``"replaced"``, ``"kept (gate)"``, ``"kept (policy)"``, ``"functional-rewritten"``,
        ``"functional-left"``.
    note
        Why a site was kept or left, or how a reused module was split (``"call 2 of 2"``).
    """

    path: str
    original: str
    action: str
    note: str = ""


@dataclass
class SwapReport:
    """Every activation site of a swapped model, in module order.

    ``str(report)`` is a table followed by the counts; ``report.counts`` maps each action to its
    number of sites.
    """

    sites: list[Site] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Number of sites per action (all five actions, zeros included)."""
        tally = Counter(site.action for site in self.sites)
        return {action: tally[action] for action in ACTIONS}

    def __str__(self) -> str:
        header = ("path", "original", "action", "note")
        rows = [(s.path or "(model)", s.original, s.action, s.note) for s in self.sites]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * width for width in widths) + "  ----")
        summary = ", ".join(f"{n} {action}" for action, n in self.counts.items() if n)
        lines.append(f"{len(self.sites)} sites: {summary or 'none'}")
        return "\n".join(line.rstrip() for line in lines)
