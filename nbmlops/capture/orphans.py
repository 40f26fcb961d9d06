"""Runs whose driver died: ended FAILED, so the store never keeps a run RUNNING forever.

A driver killed with SIGKILL (or a lost machine) cannot mark its runs. Every run records
the driver's pid, host and PID namespace (``schema.driver_tags``, written by
``tracking.create_run``); :func:`end_dead_runs` finds the RUNNING runs of an experiment
whose driver on this host and in this PID namespace is gone and marks them FAILED, with
why in ``schema.KILLED``. A run of another host or container is left alone (its driver
cannot be checked from here).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from nbmlops.capture import schema
from nbmlops.capture.tracking import pid_namespace


def end_dead_runs(client: Any, experiment: str) -> list[str]:
    """Mark the dead RUNNING runs of ``experiment`` FAILED; return their ids.

    Step runs count too: a pipeline whose driver died leaves its running step behind.
    """
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    host = socket.gethostname()
    running = client.search_runs(
        [exp.experiment_id],
        f"attributes.status = 'RUNNING' and tags.`{schema.DRIVER_HOST}` = '{host}'",
        max_results=5000,
    )
    ended = []
    namespace = pid_namespace()
    for run in running:
        if run.data.tags.get(schema.DRIVER_PIDNS) != namespace:
            continue  # another container (or an older nbmlops): its pids mean other processes
        pid = run.data.tags.get(schema.DRIVER_PID, "")
        if not pid.isdigit() or driver_alive(int(pid), run.info.start_time / 1000):
            continue
        # The search is a snapshot: the driver may have ended its run since, then exited.
        # Gone, it writes nothing more, so the run as read now is the run it left.
        if client.get_run(run.info.run_id).info.status != "RUNNING":
            continue
        client.set_tag(
            run.info.run_id,
            schema.KILLED,
            f"driver pid {pid} on {host} was gone; marked FAILED by a later nbmlops command",
        )
        client.set_terminated(run.info.run_id, "FAILED")
        ended.append(run.info.run_id)
    return ended


def driver_alive(pid: int, since: float) -> bool:
    """Whether process ``pid`` runs and is the one that started a run at ``since``
    (seconds since the epoch): a process started later merely reuses the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    started = _start_time(pid)
    if started is None:
        return True  # no /proc: trust the pid
    state, when = started
    return state != "Z" and when <= since + 1.0


def _start_time(pid: int) -> tuple[str, float] | None:
    """The process's state letter and start time (epoch seconds), from ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
    ticks = os.sysconf("SC_CLK_TCK")
    return fields[0], boot + int(fields[19]) / ticks
