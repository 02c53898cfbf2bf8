"""Why a trial failed, as its user attribute ``fail_reason`` says, when the failure is the run's
and not its function's: such a trial says nothing of its function, and it is trained again."""

#: Ctrl-C.
INTERRUPTED = "interrupted"
#: The connection to the database was lost during the trial.
LOST_CONNECTION = "lost connection"
#: The trial's process ended without a trace (``kill -9``, a crash).
PROCESS_DIED = "process died"
#: The reasons of lost runs.
LOST_RUNS = (INTERRUPTED, LOST_CONNECTION, PROCESS_DIED)
