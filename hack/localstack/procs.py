"""Process supervision for the local stack.

Each component runs in its own session (process group), logs to a file in the stack's state
directory and is recorded in `pids.json` there, so that `down` from another process (the CLI)
finds and stops everything, and a failed `up` stops whatever it had started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class StackError(RuntimeError):
    """A one-line, actionable reason why the local stack cannot start or run."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def require_free_ports(ports: dict[str, int]) -> None:
    busy = [f"{name} port {port}" for name, port in ports.items() if port_in_use(port)]
    if busy:
        raise StackError(
            f"{', '.join(busy)} already in use on 127.0.0.1 (set another port or stop what holds it)"
        )


def last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"


class Supervisor:
    """Starts named processes, remembers their pids on disk and stops them as one group."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self.pid_file = state_dir / "pids.json"
        self.commands_file = state_dir / "commands.json"  # how each one was started, to restart it
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def pids(self) -> dict[str, int]:
        try:
            data = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _write_pids(self, pids: dict[str, int]) -> None:
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids, indent=1))
        tmp.replace(self.pid_file)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the CLI that started it; stopped as a group
                env={**os.environ, **(env or {})},
                cwd=self.state_dir,
            )
        pids = self.pids()
        pids[name] = proc.pid
        self._write_pids(pids)
        commands = self._commands()
        commands[name] = {"argv": list(argv), "env": env or {}}
        self.commands_file.write_text(json.dumps(commands, indent=1))
        return proc.pid

    def _commands(self) -> dict[str, dict[str, Any]]:
        try:
            return dict(json.loads(self.commands_file.read_text()))
        except (OSError, ValueError):
            return {}

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """Stops one process (SIGTERM, then SIGKILL); `start_again` brings it back as it was."""
        pid = self.pids().get(name)
        if pid is not None:
            stop_group(pid, timeout)

    def start_again(self, name: str) -> int:
        """Starts `name` again with the command line and environment it was first started with."""
        if self.alive(name):
            raise StackError(f"{name} is still running")
        command = self._commands().get(name)
        if command is None:
            raise StackError(f"{name} was never started from {self.state_dir}")
        return self.start(name, command["argv"], command["env"])

    def alive(self, name: str) -> bool:
        pid = self.pids().get(name)
        return pid is not None and pid_alive(pid)

    def wait_until(self, name: str, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Polls `ready` until it is true; fails fast with the log's last line if `name` died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive(name):
                raise StackError(
                    f"{name} exited while starting: {last_line(self.log_dir / f'{name}.log')}"
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.1)
        raise StackError(
            f"{name} not {what} after {timeout:.0f}s: {last_line(self.log_dir / f'{name}.log')}"
        )

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stops every recorded process group, newest first (SIGTERM, then SIGKILL)."""
        pids = self.pids()
        for name in reversed(list(pids)):
            stop_group(pids[name], timeout)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0): reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_group(pid: int, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
