"""The ``aquasurf`` command: search activation functions for your model from the shell.

``aquasurf optimize my_model.py`` creates or resumes a study; ``status``, ``best``, ``top``,
``plot`` and ``export`` look at it. See ``aquasurf --help``.
"""


def main() -> None:
    """Entry point of the ``aquasurf`` console script and of ``python -m optuna_aquasurf``."""
    from optuna_aquasurf.cli._app import app

    app(prog_name="aquasurf")
