"""``python -m optuna_aquasurf``: the ``aquasurf`` command."""

from optuna_aquasurf.cli import main

main()
