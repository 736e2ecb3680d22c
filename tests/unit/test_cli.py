"""The command line: the console script is installed and its parser says what it does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantrollout import __version__
from quantrollout.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_console_script_prints_help() -> None:
    exe = shutil.which("quantrollout", path=str(Path(sys.executable).parent))
    assert exe, "the quantrollout console script is not installed in this environment"
    result = subprocess.run(
        [exe, "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0
    assert "run the operator" in result.stdout


def test_version() -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0


def test_run_scopes_are_exclusive() -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "-n", "llm", "-n", "ml-*"]).namespace == ["llm", "ml-*"]
    assert parser.parse_args(["run", "-A"]).all_namespaces
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "-A", "-n", "llm"])


def test_a_command_is_required() -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([])
    assert done.value.code == 2


def test_operator_folder_never_shadows_the_stdlib() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
    code = "import operator, sys; print(operator.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "/operator/" not in result.stdout.replace(str(REPO), "")
    assert __version__


def test_bad_leader_election_timing_is_refused_before_anything_starts() -> None:
    exe = Path(sys.executable).parent / "quantrollout"
    argv = [str(exe), "run", "--leader-elect", "--lease-duration", "5", "--renew-deadline", "10"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == (
        "quantrollout run: leader election needs 0 < retry period < renew deadline < lease "
        "duration, got 2.0 / 10.0 / 5.0\n"
    )
