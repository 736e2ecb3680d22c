"""The kubectl plugin's arguments, kubeconfig namespace, one-line errors and watch loop."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from quantrollout.cli.plugin import (
    CLEAR_SCREEN,
    Options,
    api_error_line,
    error_line,
    namespace_for,
    parse_args,
    watch_models,
)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["get"], Options("get")),
        (["get", "m", "-w"], Options("get", "m", watch=True)),
        (
            ["--kubeconfig", "/k", "--context", "c", "-n", "ns", "get", "m", "--watch"],
            Options("get", "m", True, "/k", "c", "ns"),
        ),
        (["promote", "m", "-n", "ns"], Options("promote", "m", namespace="ns")),
        (["-n", "a", "abort", "m"], Options("abort", "m", namespace="a")),
        (["retry", "m", "--context", "prod"], Options("retry", "m", context="prod")),
        (["pause", "m"], Options("pause", "m")),
        (["resume", "m", "--kubeconfig", "/k"], Options("resume", "m", kubeconfig="/k")),
    ],
)
def test_parse_args(argv: list[str], expected: Options) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize(
    "argv", [[], ["promote"], ["pause"], ["get", "a", "b"], ["explode", "m"], ["abort", "-w", "m"]]
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert "usage: kubectl quantrollout" in capsys.readouterr().err


CONTEXTS = [
    {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "llm"}},
    {"name": "prod", "context": {"cluster": "c", "user": "u"}},
]


@pytest.mark.parametrize(
    ("explicit", "context", "expected"),
    [
        ("given", None, "given"),
        (None, None, "llm"),  # the current context's
        (None, "prod", "default"),  # a context without a namespace
        (None, "dev", "llm"),
    ],
)
def test_namespace_for(explicit: str | None, context: str | None, expected: str) -> None:
    assert namespace_for(explicit, CONTEXTS, CONTEXTS[0], context) == expected


def _status(reason: str, message: str, code: int, **details: Any) -> str:
    body = {"kind": "Status", "status": "Failure", "reason": reason, "message": message}
    return json.dumps({**body, "code": code, "details": details})


def test_error_lines() -> None:
    server = "https://127.0.0.1:6443"
    not_found = _status("NotFound", 'quantizedmodels "m" not found', 404, name="m")
    assert (
        api_error_line(404, not_found, "Not Found", "m", "llm", server)
        == 'quantizedmodel "m" not found in namespace "llm"'
    )
    assert api_error_line(404, "404 page not found\n", "Not Found", None, "llm", server) == (
        "the cluster at https://127.0.0.1:6443 has no QuantizedModel resource "
        "(quantizedmodels.quantrollout.io/v1alpha1): is the quantrollout CRD installed?"
    )
    message = (
        'quantizedmodels.quantrollout.io "m" is forbidden: User "bob" cannot patch resource\n'
        '"quantizedmodels" in API group "quantrollout.io" in the namespace "llm"'
    )
    assert api_error_line(403, _status("Forbidden", message, 403), "Forbidden", "m", "llm", "") == (
        'forbidden: quantizedmodels.quantrollout.io "m" is forbidden: User "bob" cannot patch '
        'resource "quantizedmodels" in API group "quantrollout.io" in the namespace "llm"'
    )
    assert api_error_line(401, None, "Unauthorized", "m", "llm", server) == (
        "unauthorized: the cluster at https://127.0.0.1:6443 did not accept your credentials"
    )
    refused = urllib3.exceptions.MaxRetryError(
        None,  # type: ignore[arg-type]
        "/apis",
        urllib3.exceptions.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
    )
    assert error_line(refused, "m", "llm", server) == (
        "cannot reach the cluster at https://127.0.0.1:6443: Connection refused"
    )
    assert error_line(ApiException(status=500, reason="boom"), "m", "llm", server) == (
        "the API server answered 500: boom"
    )


class FakeModels:
    """Models whose watch replays events, then stands for a Ctrl-C."""

    namespace = "llm"

    def __init__(self, first: dict[str, Any], batches: list[list[tuple[str, dict[str, Any]]]]):
        self.first = first
        self.batches = batches
        self.watched_from: list[str] = []

    def get(self, name: str) -> dict[str, Any]:
        return self.first

    def list(self) -> tuple[list[dict[str, Any]], str]:
        return [self.first], self.first["metadata"]["resourceVersion"]

    def events(self, name: str | None, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(version)
        if not self.batches:
            raise KeyboardInterrupt
        batch = self.batches.pop(0)
        if batch and batch[0][0] == "410":
            raise ApiException(status=410, reason="Expired")
        for kind, obj in batch:
            if kind in ("ADDED", "MODIFIED"):
                self.first = obj  # what a new list or get would return
            yield kind, obj


def _qm(version: str, phase: str | None, stage: str | None = None) -> dict[str, Any]:
    spec = {
        "model": "m",
        "baseline": {"artifact": "hf://org/m", "precision": "fp16"},
        "target": {"name": "int8", "artifact": "hf://org/m-int8", "precision": "int8",
                   "format": "gptq"},
    }  # fmt: skip
    status = {"phase": phase, "stage": stage, "step": 0} if phase else {}
    meta = {"name": "m", "namespace": "llm", "resourceVersion": version}
    return {"metadata": meta, "spec": spec, "status": status}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_redraws_on_change_only() -> None:
    models = FakeModels(
        _qm("1", None),
        [
            [("MODIFIED", _qm("2", "Progressing", "shadow")), ("MODIFIED", _qm("3", "Progressing", "shadow"))],
            [("BOOKMARK", {"metadata": {"resourceVersion": "9"}})],
            [("410", {})],
            [("DELETED", _qm("11", "Progressing", "shadow"))],
        ],
    )  # fmt: skip
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        watch_models(models, "m", out)  # type: ignore[arg-type]
    frames = out.getvalue().split("\nName:")
    assert len(frames) == 2  # the first draw, and the one change that shows (rv 3 looks the same)
    assert "Phase:      Pending" in frames[0]
    assert "Phase:      Progressing" in frames[1]
    assert out.getvalue().endswith('quantizedmodel "m" was deleted from namespace "llm"\n')
    # resumed from the last version seen, then from the fresh read after the 410
    assert models.watched_from == ["1", "3", "9", "3", "11"]


def test_watch_clears_a_terminal_between_frames() -> None:
    models = FakeModels(_qm("1", None), [[("MODIFIED", _qm("2", "Progressing", "ab"))]])
    out = Terminal()
    with pytest.raises(KeyboardInterrupt):
        watch_models(models, "m", out)  # type: ignore[arg-type]
    assert out.getvalue().count(CLEAR_SCREEN) == 2
    assert out.getvalue().startswith(CLEAR_SCREEN + "Name:       llm/m\n")
