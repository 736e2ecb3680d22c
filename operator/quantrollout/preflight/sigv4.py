"""AWS Signature Version 4 for S3 GET requests (and any S3-compatible store that checks it).

Pure: values in (method, URL, headers, credentials, clock), headers out. Only what the artifact
check sends is covered: requests without a body, signed in the Authorization header. Tested against
AWS's published example and against a real S3-compatible server (versitygw), which refuses a
wrong signature.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def _encode(text: str, safe: str = "") -> str:
    # RFC 3986 unreserved characters stay, everything else is %XX (upper case), as SigV4 wants.
    return quote(text, safe="-_.~" + safe)


def canonical_query(query: str) -> str:
    pairs = []
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        pairs.append((_encode(unquote(key)), _encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    credentials: Credentials,
    *,
    region: str,
    service: str,
    now: datetime,
    payload_hash: str = EMPTY_SHA256,
) -> dict[str, str]:
    """`headers` plus x-amz-date, x-amz-content-sha256 (s3), the session token if any, and
    Authorization. `url` must already be percent-encoded the way it is sent; `now` is UTC."""
    parts = urlsplit(url)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = stamp
    if service == "s3":
        signed["x-amz-content-sha256"] = payload_hash
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",  # already encoded once; S3 does not encode it again
            canonical_query(parts.query),
            "".join(f"{n}:{' '.join(signed[n].split())}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(credentials.secret_key, stamp[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {**headers, **{n: signed[n] for n in names if n.startswith("x-amz-")}}
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


def encode_key(key: str) -> str:
    """An object key as it goes in a URL path (slashes kept)."""
    return _encode(key, safe="/")
