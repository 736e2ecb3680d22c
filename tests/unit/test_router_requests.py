"""Which completion requests the router refuses before asking a tier. Pure."""

from __future__ import annotations

import pytest

from quantrollout.router.requests import Refused, parse_completion, unknown_model


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model": "m",', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"m"', "must be a JSON object"),
        (b'{"messages": []}', "'model' is required"),
        (b'{"model": 7}', "'model' is required"),
        (b'{"model": null}', "'model' is required"),
    ],
)
def test_refused(body: bytes, message: str) -> None:
    refused = parse_completion(body)
    assert isinstance(refused, Refused)
    assert refused.status == 400
    assert message in refused.message


def test_accepted_as_is() -> None:
    body = b'{"model": "m", "stream": true, "temperature": 0, "anything": {"else": 1}}'
    assert parse_completion(body) == {
        "model": "m", "stream": True, "temperature": 0, "anything": {"else": 1},
    }  # fmt: skip


def test_unknown_model_is_404_in_openai_words() -> None:
    refused = unknown_model("gpt-17")
    assert (refused.status, refused.code, refused.param) == (404, "model_not_found", "model")
    assert "gpt-17" in refused.message
