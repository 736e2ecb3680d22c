"""Which completion requests the router refuses before asking a tier. Pure."""

from __future__ import annotations

import pytest

from quantrollout.router.requests import (
    Refused,
    Request,
    choose_model,
    parse_completion,
    parse_request,
    unknown_model,
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model": "m",', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"m"', "must be a JSON object"),
        (b'{"model": 7}', "'model' must be a string"),
        (b'{"model": ["m"]}', "'model' must be a string"),
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


def test_model_is_optional_as_in_vllm() -> None:
    assert parse_completion(b'{"messages": []}') == {"messages": []}
    assert parse_completion(b'{"model": null}') == {"model": None}
    assert parse_request(b'{"input": "hi"}', "json", "application/json", b"") == Request(None)


def test_what_is_read_of_a_json_request() -> None:
    body = b'{"model": "m", "stream": true, "seed": 7, "messages": []}'
    assert parse_request(body, "json", "", b"") == Request("m", True, "seeded")
    assert parse_request(b'{"model": "m", "temperature": 0}', "json", "", b"") == Request(
        "m", False, "greedy"
    )
    assert parse_request(b'{"model": "m", "stream": "yes"}', "json", "", b"").streamed is False


def multipart(fields: dict[str, bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    parts = b"".join(
        b"--" + boundary.encode() + b"\r\n"
        + f'Content-Disposition: form-data; name="{name}"'.encode()
        + (b'; filename="a.wav"\r\nContent-Type: audio/wav' if name == "file" else b"")
        + b"\r\n\r\n" + value + b"\r\n"
        for name, value in fields.items()
    )  # fmt: skip
    return (
        parts + b"--" + boundary.encode() + b"--\r\n",
        f"multipart/form-data; boundary={boundary}",
    )


def test_the_model_of_an_upload() -> None:
    audio = b'RIFF\x00\x01name="model"\r\n\r\nnot this'  # a file that looks like a field
    body, content_type = multipart({"file": audio, "model": b"whisper-large", "language": b"en"})
    assert parse_request(body, "form", content_type, b"") == Request("whisper-large")
    body, content_type = multipart({"file": audio}, boundary="x-y")
    assert parse_request(body, "form", content_type, b"") == Request(None)
    form = b"model=whisper&language=en"
    assert parse_request(form, "form", "application/x-www-form-urlencoded", b"").model == "whisper"
    assert parse_request(b"...", "form", "text/plain", b"") == Request(None)


def test_a_request_without_body_names_its_model_in_the_query() -> None:
    assert parse_request(b"", "none", "", b"") == Request(None)
    assert parse_request(b"", "none", "", b"model=m&stream=true") == Request("m", True)


def test_choose_model() -> None:
    assert choose_model("a", {"a", "b"}) == "a"
    assert choose_model(None, {"only"}) == "only"
    several = choose_model(None, {"a", "b"})
    assert isinstance(several, Refused)
    assert (several.status, several.param) == (400, "model")
    assert "a, b" in several.message
    missing = choose_model("c", {"a"})
    assert isinstance(missing, Refused)
    assert missing.status == 404
    assert isinstance(choose_model(None, set()), Refused)
