"""``aquasurf studies`` and ``aquasurf delete``: the studies of a storage, as ``optuna studies``
and ``optuna delete-study`` give them."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optuna_aquasurf.cli._storage import open_storage, study_name

#: The project's table whose rows belong to one study (by study id); its other tables are keyed
#: by content and may serve several studies (see :mod:`optuna_aquasurf._store`).
CLAIMS_TABLE = "aquasurf_claims"


def study_summaries(url: str) -> list[dict]:
    """One record per study of the storage at ``url``: name, directions, trials by state and
    best value (of a single-objective study; None for several objectives or no complete trial).

    Raises
    ------
    UserError
        For a storage that cannot be opened (or a SQLite file that does not exist).
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    storage = open_storage(url, must_exist=True)
    records = []
    for study in storage.get_all_studies():
        study_id = storage.get_study_id_from_name(study.study_name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
        values = [t.values[0] for t in trials if t.state == TrialState.COMPLETE and t.values]
        best = None
        if len(study.directions) == 1 and values:
            best = max(values) if study.directions[0] == StudyDirection.MAXIMIZE else min(values)
        records.append(
            {
                "name": study.study_name,
                "directions": [d.name.lower() for d in study.directions],
                "trials": dict(Counter(t.state.name.lower() for t in trials)),
                "best_value": best,
            }
        )
    return records


def trial_count(storage, name: str, url: str) -> int:
    """The number of trials of the study ``name`` in ``storage`` (opened from ``url``).

    Raises
    ------
    UserError
        For an unknown study, listing the existing ones.
    """
    study_id = storage.get_study_id_from_name(study_name(storage, name, url))
    return len(storage.get_all_trials(study_id, deepcopy=False))


def delete_study(storage, name: str) -> None:
    """Delete the study ``name`` of ``storage`` with its trials and the claims that
    ``aquasurf`` keeps for it."""
    import optuna

    study_id = storage.get_study_id_from_name(name)
    optuna.delete_study(study_name=name, storage=storage)
    if sa.inspect(storage.engine).has_table(CLAIMS_TABLE):
        with storage.engine.begin() as connection:
            connection.execute(
                sa.text(f"DELETE FROM {CLAIMS_TABLE} WHERE study_id = :id"), {"id": study_id}
            )


def print_studies(console: Console, records: list[dict]) -> None:
    """The records of :func:`study_summaries` as a table."""
    table = Table("study", "directions", "trials", "best value", title_justify="left")
    for record in records:
        counts = ", ".join(f"{n} {state}" for state, n in record["trials"].items())
        best = record["best_value"]
        table.add_row(
            escape(record["name"]),
            ", ".join(record["directions"]),
            counts or "none",
            "-" if best is None else f"{best:.4g}",
        )
    console.print(table)
