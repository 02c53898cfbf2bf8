"""Rich progress of a search: trials done, best so far and its expression, elapsed time and ETA."""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_STATES = {
    TrialState.COMPLETE: "[green]done[/]  ",
    TrialState.PRUNED: "[yellow]pruned[/]",
    TrialState.FAIL: "[red]failed[/]",
}


class SearchProgress:
    """A progress bar over the finished trials, and one line per finished trial above it.

    Use as a context manager; call :meth:`choosing` when a trial starts, :meth:`started` when
    it has its activation and :meth:`finished` after each trial.

    Parameters
    ----------
    console
        Where to draw.
    total, done
        The target number of finished trials and how many the study has already.
    worker
        The label of a worker process started by ``--workers`` (such as ``"2/4"``): no bar,
        its lines start with the label.
    """

    def __init__(self, console: Console, total: int, done: int, worker: str | None = None):
        self._prefix = "" if worker is None else f"[dim]worker {escape(worker)}[/]  "
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[best]}"),
            console=console,
            disable=worker is not None,
        )
        self._task = self._progress.add_task("trials", total=total, completed=done, best="")

    def __enter__(self) -> SearchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()

    def choosing(self, number: int, doing: str = "choosing a function") -> None:
        """Show what the trial whose function is being chosen is ``doing``."""
        self._progress.update(self._task, description=f"trial {number}: {doing}")

    def started(self, number: int, expression: str) -> None:
        """Show the trial that is training now."""
        self._progress.update(self._task, description=f"trial {number} {escape(expression)}")

    def finished(self, trial: FrozenTrial, done: int, best: FrozenTrial | None) -> None:
        """Print the result of ``trial`` and move the bar to ``done``, showing ``best``."""
        attrs = trial.user_attrs
        if trial.state == TrialState.COMPLETE:
            result = f"{trial.values[0]:.4f}"
            if len(trial.values) == 2:
                result += f" cost {trial.values[1]:.2f}"
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            last = trial.intermediate_values[max(trial.intermediate_values)]
            result = f"{last:.4f} at step {max(trial.intermediate_values)}"
        else:
            result = escape(attrs.get("fail_reason", ""))
        seconds = attrs.get("seconds", 0.0)
        self._progress.console.print(
            f"{self._prefix}trial {trial.number:>4}  {_STATES.get(trial.state, trial.state.name)}  "
            f"{escape(attrs.get('activation', '?'))}  {result}  [dim]{seconds:.1f} s[/]"
        )
        shown = ""
        if best is not None:
            shown = f"best {best.values[0]:.4f} {escape(best.user_attrs.get('activation', '?'))}"
        self._progress.update(self._task, completed=done, best=shown, description="trials")
