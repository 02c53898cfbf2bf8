"""The consoles of the ``aquasurf`` command and the error it reports without a traceback."""

from __future__ import annotations

import sys

from rich.console import Console

#: The width of stdout when it is not a terminal (a log, a pipe): wider than any table row, so
#: that an expression is never split across lines.
LOG_WIDTH = 1000
#: Tables and results (stdout).
console = Console(highlight=False, width=None if sys.stdout.isatty() else LOG_WIDTH)
#: Progress, notes and errors (stderr), so that ``--json`` output stays clean.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A problem the user can fix (bad file, storage, study or expression): exit code 1.

    The message is printed as is, without a traceback.
    """
