"""``--workers N``: several worker processes on one study, on this machine, for ``aquasurf
optimize`` and ``aquasurf confirm``.

Each worker is an ``aquasurf optimize`` (or ``aquasurf confirm``) process of its own, started by
:func:`run_workers`. They share the study through its database: the sampler's claims keep
search workers on different functions, and they split the Fisher features of the map with the
map process that this process starts (:class:`BackgroundMap`); confirmation workers take in
turn the runs that this process enqueued (:func:`optuna_aquasurf._confirm.run_queued`). The
storage URL reaches them in the environment variable ``AQUASURF_STORAGE``, so that its password
never shows in the process list.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from optuna_aquasurf.cli._console import UserError, err_console
from optuna_aquasurf.cli._map_process import BackgroundMap
from optuna_aquasurf.cli._optimize import SearchSettings, describe, open_study, print_top

#: The environment variable that gives every command its ``--storage``.
STORAGE_VARIABLE = "AQUASURF_STORAGE"


def worker_devices(n: int, device: str) -> list[tuple[str, dict[str, str]]]:
    """The ``--device`` and extra environment of each of ``n`` workers.

    With ``auto`` or ``cuda`` and CUDA available, each worker sees one GPU
    (``CUDA_VISIBLE_DEVICES``), taken in turn from the visible ones; with ``cpu`` (or ``auto``
    without CUDA), the workers split the CPU cores between their torch threads. A device such
    as ``cuda:1`` is shared by all workers.
    """
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            gpus = [gpu.strip() for gpu in visible.split(",") if gpu.strip()]
        else:
            gpus = [str(index) for index in range(torch.cuda.device_count())]
        return [("cuda", {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}) for i in range(n)]
    if device in ("auto", "cpu"):
        threads = str(max(1, (os.cpu_count() or 1) // n))
        return [("cpu", {"OMP_NUM_THREADS": threads})] * n
    return [(device, {})] * n


def optimize_with_workers(path: Path, workers: int, settings: SearchSettings) -> None:
    """Create (or load) the study, run ``workers`` worker processes on it, show the best.

    The study is created here first: Optuna's tables, created by several processes starting at
    once on an empty database, would race.

    Raises
    ------
    UserError
        For problems with the file, the storage or the study, and when a worker fails.
    KeyboardInterrupt
        After Ctrl-C, once every worker has stopped.
    """
    user, study = open_study(path, settings)
    devices = worker_devices(workers, settings.device)
    where = f"{workers} workers ({describe_devices(devices)})"
    if describe(study, user, settings, where) < settings.n_trials:
        command = worker_command(path, settings, study.study_name)
        with BackgroundMap(study, path, settings):
            run_workers(command, devices, settings.storage_url)
    print_top(study, path)


def describe_devices(devices: list[tuple[str, dict[str, str]]]) -> str:
    """Where the workers of :func:`worker_devices` train, as said: ``"cpu"``, ``"cuda0, cuda1"``."""
    return ", ".join(sorted({d + env.get("CUDA_VISIBLE_DEVICES", "") for d, env in devices}))


def run_workers(
    command: list[str], devices: list[tuple[str, dict[str, str]]], storage_url: str
) -> None:
    """Run a worker process of ``command`` (see :func:`command_line`) for each of the
    ``devices`` (:func:`worker_devices`), each with its ``--device`` and ``--worker I/N`` and
    with ``storage_url`` in the environment, and wait for them all.

    Raises
    ------
    UserError
        When a worker fails.
    KeyboardInterrupt
        After Ctrl-C, once every worker has stopped.
    """
    n = len(devices)
    processes = [
        subprocess.Popen(
            [*command, "--device", device, "--worker", f"{i + 1}/{n}"],
            env={**os.environ, **env, STORAGE_VARIABLE: storage_url},
        )
        for i, (device, env) in enumerate(devices)
    ]
    codes, interrupted = _wait(processes)
    if interrupted or 130 in codes:
        err_console.print("Workers stopped: run the same command to resume.")
        raise KeyboardInterrupt
    failed = [f"{i + 1} (exit code {code})" for i, code in enumerate(codes) if code != 0]
    if failed:
        raise UserError(f"Workers {', '.join(failed)} stopped with an error: see above.")


def worker_command(path: Path, settings: SearchSettings, study_name: str) -> list[str]:
    """The command line of a search worker: ``aquasurf optimize`` with the search's settings,
    but the device and the storage (each worker's own, and in the environment)."""
    options = dataclasses.asdict(settings)
    del options["device"], options["storage_url"]
    options["study"] = study_name
    del options["study_name"]
    return command_line("optimize", path, options)


def command_line(command: str, path: Path, options: dict[str, Any]) -> list[str]:
    """``python -m optuna_aquasurf COMMAND PATH`` with ``options``, by name (``max_cost`` is
    ``--max-cost``): a tuple gives the option once per item, None leaves it out."""
    line = [sys.executable, "-m", "optuna_aquasurf", command, str(path)]
    for name, value in options.items():
        for item in value if isinstance(value, tuple) else [value]:  # --prior A --prior B
            if item is not None:
                line += [f"--{name.replace('_', '-')}", str(item)]
    return line


def _wait(processes: list[subprocess.Popen]) -> tuple[list[int], bool]:
    """The exit codes of all processes, and whether Ctrl-C came meanwhile.

    Ctrl-C reaches the workers too (one process group): each fails its running trial and
    stops, and this process waits for them all.
    """
    interrupted = False
    codes = []
    for process in processes:
        while True:
            try:
                codes.append(process.wait())
                break
            except KeyboardInterrupt:
                interrupted = True
    return codes, interrupted
