"""The workers' metric directories (`router/metric_files.py`): a new supervisor removes those of
supervisors that are gone, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantrollout.router import metric_files
from quantrollout.router.metric_files import PREFIX, new_directory, remove_stale, started

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_a_process_start_time_is_read_from_proc_and_none_for_no_process() -> None:
    mine = started(os.getpid())
    assert mine is not None
    assert mine.isdigit()
    assert started(os.getpid()) == mine  # the same process: the same time
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert started(int(child.stdout)) is None  # it is gone


def test_only_the_directories_of_supervisors_that_are_gone_are_removed(tmp_path: Path) -> None:
    pid = os.getpid()
    live = tmp_path / f"{PREFIX}{pid}-{started(pid)}-abc"
    restarted = tmp_path / f"{PREFIX}{pid}-1-def"  # this pid, another start: a former container's
    gone = tmp_path / f"{PREFIX}4194999-123-ghi"  # over the kernel's largest pid
    older = tmp_path / f"{PREFIX}k2j3h4"  # named by an earlier release: not judged
    other = tmp_path / "somebody-else-4194999-123-x"
    for d in (live, restarted, gone, older, other):
        d.mkdir()
        (d / "counter_1.db").write_bytes(b"\0" * 64)
    removed = remove_stale(str(tmp_path))
    assert sorted(removed) == sorted([restarted.name, gone.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, older.name, other.name])


def test_a_new_directory_is_named_for_its_supervisor_and_cleans_up_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / f"{PREFIX}4194999-123-old").mkdir()
    made = Path(new_directory(str(tmp_path)))
    assert made.parent == tmp_path
    assert made.name.startswith(f"{PREFIX}{os.getpid()}-{started(os.getpid())}-")
    assert [p.name for p in tmp_path.iterdir()] == [made.name]
    assert remove_stale(str(tmp_path)) == []  # its own: kept
    monkeypatch.setattr(metric_files, "started", lambda pid: None)  # no /proc
    (tmp_path / f"{PREFIX}4194999-123-old").mkdir()
    assert remove_stale(str(tmp_path)) == []
