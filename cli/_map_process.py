"""The map of the space, computed by a process of its own while the first trials train.

The sampler's first picks are the baselines, which need no map. A search whose map is not stored
yet starts :class:`BackgroundMap`: a process that computes the Fisher features of the model
(stored with the study, as any worker would) and says so, then the 2-D map for plots. The first
surrogate pick waits for the features: on the same cores (or GPU), helping compute them would
only slow both down. Workers started by ``--workers`` split the Fisher chunks that the map
process has not started, through the store's leases.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna

from optuna_aquasurf.cli._console import err_console
from optuna_aquasurf.cli._objective import resolve_device
from optuna_aquasurf.cli._storage import open_storage
from optuna_aquasurf.cli._study_sampler import StudySettings, study_sampler
from optuna_aquasurf.cli._userfile import load_user_file
from optuna_aquasurf.cli._verbosity import set_optuna_verbosity

#: Seconds the map process gets to give its leases back when the search ends first.
STOP_TIMEOUT = 10.0
#: Exit code of a map process whose map is not the search's (its ``fisher_batch()`` differed).
OTHER_MAP = 3


class BackgroundMap:
    """Context manager: a process computes the map of ``study``'s space unless it is stored.

    Parameters
    ----------
    study
        The study, with its :class:`~optuna_aquasurf.AquaSurfSampler`.
    path
        The model file.
    settings
        The search's :class:`~optuna_aquasurf.cli._optimize.SearchSettings` (its storage and
        device; the sampler is the study's, from the settings kept with it).
    """

    def __init__(self, study: optuna.Study, path: Path, settings) -> None:
        self.study = study
        self.path = path
        self.settings = settings
        self.process: multiprocessing.process.BaseProcess | None = None
        self._features_ready: multiprocessing.synchronize.Event | None = None
        self._started = 0.0

    def __enter__(self) -> BackgroundMap:
        sampler = self.study.sampler
        if sampler.has_embedding(self.study):
            return self
        err_console.print(
            f"Map of the {len(sampler.space):,} functions: computed in the background and "
            "stored; the baselines train meanwhile."
        )
        context = multiprocessing.get_context("spawn")  # no fork of a process running torch
        self._features_ready = context.Event()
        self.process = context.Process(
            target=compute_map,
            args=(
                self.path,
                self.settings,
                self.study.study_name,
                os.getpid(),
                self._features_ready,
            ),
            name="aquasurf map",
        )
        self._started = time.perf_counter()
        self.process.start()
        return self

    def poll(self) -> None:
        """Say once that the map process has finished, and how."""
        if self.process is None or self.process.exitcode is None:
            return
        if self.process.exitcode == 0:
            seconds = time.perf_counter() - self._started
            err_console.print(f"Map of the space ready ({seconds:.0f} s in the background).")
        elif self.process.exitcode == OTHER_MAP:
            err_console.print(
                "[yellow]fisher_batch() gave the map process another batch than this one[/] (a "
                "shuffled loader or random augmentation?), so the map cannot be shared: it is "
                "computed before the first pick that needs it. Return the same batch every time "
                "to share it with workers and resumed runs."
            )
        else:
            err_console.print(
                "[yellow]The background map process stopped with an error;[/] the map is "
                "computed before the first pick that needs it."
            )
        self.process = None

    def must_wait(self) -> bool:
        """Whether the next pick needs the features while the map process computes them: the
        baselines are all taken."""
        return (
            self.process is not None
            and not self._features_ready.is_set()
            and not self.study.sampler.baselines_left(self.study)
        )

    def wait(self) -> None:
        """Wait for the map process to store the features (or to end), rather than compete
        with it for the same cores (if it failed, the pick computes what is missing)."""
        while self.process is not None and self.process.is_alive():
            if self._features_ready.wait(0.5):
                return
        self.poll()

    def __exit__(self, exc_type, *exc_info) -> None:
        """Let the map process finish the 2-D map when the search ends normally after the
        features (Ctrl-C skips it); stop it otherwise: it gives its leases back."""
        self.poll()
        if self.process is None:
            return
        if exc_type is None and self._features_ready.is_set():
            err_console.print("Finishing the map of the space for `aquasurf plot` (Ctrl-C skips).")
            try:
                self.process.join()
                self.poll()
                return
            except KeyboardInterrupt:
                pass
        self.process.terminate()
        self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def compute_map(path: Path, settings, study_name: str, parent: int, features_ready) -> None:
    """Body of the map process: compute and store the Fisher features of the study's space, set
    ``features_ready``, then compute and store its 2-D map.

    The process stops with its parent (even one killed with SIGKILL); SIGTERM unwinds it, so
    that the leases it holds are given back. Errors end it quietly with exit code 1: the search
    process computes what is missing itself and reports them.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the search process's to handle
    _stop_with_parent(parent)
    warnings.simplefilter("ignore")
    set_optuna_verbosity()
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(settings.storage_url))
        kept = StudySettings.of(study)
        sampler = study_sampler(kept, load_user_file(path), resolve_device(settings.device))
        if sampler.map_key != kept.map_key:
            sys.exit(OTHER_MAP)
        sampler.surrogate_points(study)
        features_ready.set()
        sampler.embedding(study)
    except Exception:  # noqa: BLE001 - reported by the search process, which computes it again
        sys.exit(1)


def _stop_with_parent(parent: int) -> None:
    """SIGTERM this process once ``parent`` has gone; end it if that has not within
    :data:`STOP_TIMEOUT` (Python handles the signal only between bytecodes, not inside a long
    compiled loop)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_TIMEOUT)
        os._exit(1)

    threading.Thread(target=watch, name="aquasurf parent watch", daemon=True).start()
