"""Where the local stack keeps etcd's data: one directory per stack, so that test sessions running
side by side on one machine never share (or delete) each other's etcd."""

from __future__ import annotations

from pathlib import Path

from localstack.controlplane import etcd_data_dir


def test_every_stack_has_its_own_etcd_directory() -> None:
    states = [
        Path("/tmp/pytest-of-root/pytest-71/stack0/controlplane"),
        Path("/tmp/pytest-of-root/pytest-69/stack0/controlplane"),
        Path("/tmp/chaos/bt2/stack0/controlplane"),
        Path("/work/x/.stack/controlplane"),
    ]
    dirs = {etcd_data_dir(s) for s in states}
    assert len(dirs) == len(states)
    assert all(d.name.startswith("quantrollout-etcd-") for d in dirs)


def test_the_same_stack_finds_its_directory_again() -> None:
    state = Path("/tmp/pytest-of-root/pytest-71/stack0/controlplane")
    assert etcd_data_dir(state) == etcd_data_dir(Path(str(state)))
