"""SigV4 against AWS's published example (the IAM ListUsers request of the Signature Version 4
documentation); the S3 form is checked against a real server in
tests/integration/test_preflight_stores.py."""

from __future__ import annotations

from datetime import UTC, datetime

from quantrollout.preflight.sigv4 import Credentials, canonical_query, encode_key, sign

EXAMPLE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def test_aws_documented_example() -> None:
    headers = sign(
        "GET",
        "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        EXAMPLE,
        region="us-east-1",
        service="iam",
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    assert headers["x-amz-date"] == "20150830T123600Z"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )


def test_s3_requests_carry_the_payload_hash_and_session_token() -> None:
    creds = Credentials("AKID", "SECRET", session_token="TOKEN")
    headers = sign(
        "GET", "http://127.0.0.1:9000/bucket/key", {"Range": "bytes=0-7"}, creds,
        region="us-east-1", service="s3", now=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert headers["x-amz-content-sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert headers["x-amz-security-token"] == "TOKEN"
    assert (
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        in (headers["Authorization"])
    )


def test_keys_and_queries_are_encoded_as_sigv4_wants() -> None:
    assert encode_key("models/a b+c~d.json") == "models/a%20b%2Bc~d.json"
    assert canonical_query("b=2&a=x%20y&c") == "a=x%20y&b=2&c="
