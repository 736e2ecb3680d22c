"""Where the worker processes write their metric files (prometheus_client's multiprocess mode,
`metrics.shared_metrics`): one directory per supervisor, named for the process that made it.

A supervisor removes its directory when it stops, but one killed outright (SIGKILL, an
out-of-memory kill) cannot. In a pod, `/tmp` is the chart's in-memory `emptyDir`, which outlives
a container restart: each restart would leave ~200 KiB per worker behind, counted against the
pod's memory. So a new supervisor first removes the directories whose supervisor is gone: the
name holds its pid and its start time (`/proc/PID/stat`), and a directory is stale when no
process with that pid started at that time. Directories named otherwise are left alone, and so is
everything where there is no `/proc`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "quantrollout-router-metrics-"


def started(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, /proc/PID/stat), or None when there
    is no such process, or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command's name, which may hold spaces
    return fields[19] if len(fields) > 19 else None  # field 22 of the file; `state` is field 3


def remove_stale(base: str) -> list[str]:
    """Removes the metric directories in `base` whose supervisor is gone; their names."""
    if started(os.getpid()) is None:  # no /proc: nothing can be told
        return []
    removed = []
    for entry in sorted(Path(base).glob(PREFIX + "*")):
        pid, _, rest = entry.name.removeprefix(PREFIX).partition("-")
        when, _, _ = rest.partition("-")
        if not (pid.isdigit() and when.isdigit()) or not entry.is_dir():
            continue  # not named by a supervisor of this release
        if started(int(pid)) != when:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("removed %d metric directories of router supervisors that are gone", len(removed))
    return removed


def new_directory(base: str | None = None) -> str:
    """A new directory for this supervisor's workers, once the stale ones are removed."""
    base = base or tempfile.gettempdir()
    remove_stale(base)
    pid = os.getpid()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-{started(pid) or 0}-", dir=base)
