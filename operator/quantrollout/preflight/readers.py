"""Reading an artifact's files where the spec says they are: s3://, gs://, hf:// and pvc://.

The only I/O of the artifact check. Each reader answers three questions about a file of the
checkpoint, by its name relative to the artifact: its bytes (small files), its first bytes and
total size (a safetensors header: one range request), and its bytes as a stream (for a digest).
An absent file is None, never an error; anything else that stops a read (credentials refused,
the server down) is a `ReadError`, which makes the check an Error, not a Fail.

- pvc://claim/path: the Job mounts the claim at `<pvc-root>/<claim>` (default /models/<claim>,
  as the serving pods do) and the files are read from `<pvc-root>/<claim>/<path>`.
- hf://org/name[@rev]: `GET {HF_ENDPOINT}/org/name/resolve/{rev}/{file}` (rev defaults to main),
  Bearer HF_TOKEN when set; redirects followed (the Hub sends large files to its CDN).
- s3://bucket/prefix: S3 REST, path-style on AWS_ENDPOINT_URL (S3-compatible stores) or
  virtual-hosted on AWS, signed with SigV4 from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
  (/ AWS_SESSION_TOKEN) in AWS_REGION (default us-east-1); unsigned when no key is set.
- gs://bucket/prefix: the same S3 code against Cloud Storage's XML API
  (https://storage.googleapis.com, region auto), which accepts SigV4 with HMAC keys given the
  same way. Not tested against Cloud Storage itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx

from quantrollout.preflight.locations import Location
from quantrollout.preflight.sigv4 import Credentials, encode_key, sign

MAX_SMALL_FILE = 256 * 1024**2  # tokenizer.json of large vocabularies is tens of MB at most
CHUNK = 1024**2
_CONTENT_RANGE = re.compile(r"^bytes (?:\d+-\d+|\*)/(\d+)$")
_S3_CODE = re.compile(r"<Code>([^<]*)</Code>")
_S3_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


class ReadError(RuntimeError):
    """The artifact could not be read (not: a file is absent). The message says which and why."""


class Reader(Protocol):
    location: str

    def pin(self) -> str | None:
        """Fix the version every later read sees, and say which it is (a commit), where the
        store has versions; None where it has not."""
        ...

    def get(self, name: str) -> bytes | None:
        """The whole file, or None if there is no such file."""
        ...

    def head(self, name: str, length: int) -> tuple[bytes, int] | None:
        """Up to `length` first bytes and the file's total size, or None if absent."""
        ...

    def range(self, name: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (the file is known to exist)."""
        ...

    def stream(self, name: str) -> Iterator[bytes]:
        """The whole file in pieces."""
        ...


class DirReader:
    """A directory: a mounted PersistentVolumeClaim (pvc://)."""

    def __init__(self, root: Path, location: str) -> None:
        self.root, self.location = root, location

    def pin(self) -> str | None:
        return None

    def _path(self, name: str) -> Path | None:
        path = self.root / name
        return path if path.is_file() else None

    def get(self, name: str) -> bytes | None:
        path = self._path(name)
        if path is None:
            return None
        if path.stat().st_size > MAX_SMALL_FILE:
            raise ReadError(f"{self.location}/{name}: larger than {MAX_SMALL_FILE} bytes")
        return path.read_bytes()

    def head(self, name: str, length: int) -> tuple[bytes, int] | None:
        path = self._path(name)
        if path is None:
            return None
        with path.open("rb") as f:
            return f.read(length), os.fstat(f.fileno()).st_size

    def range(self, name: str, start: int, length: int) -> bytes:
        with (self.root / name).open("rb") as f:
            f.seek(start)
            return f.read(length)

    def stream(self, name: str) -> Iterator[bytes]:
        with (self.root / name).open("rb") as f:
            while piece := f.read(CHUNK):
                yield piece


class HttpReader:
    """What the HTTP readers share: one client, ranges, and errors in words."""

    location: str

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def pin(self) -> str | None:
        return None

    def url(self, name: str) -> str:
        raise NotImplementedError

    def headers(self, method: str, url: str, extra: dict[str, str]) -> dict[str, str]:
        return extra

    def _send(self, name: str, extra: dict[str, str]) -> httpx.Response | None:
        url = self.url(name)
        request = self.client.build_request("GET", url, headers=self.headers("GET", url, extra))
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise ReadError(f"{self.location}/{name}: {err.__class__.__name__}: {err}") from None
        if response.status_code in (200, 206, 416):
            return response
        # Anything else is the store refusing, including a redirect left after following the
        # ones that can be (S3's 301 PermanentRedirect to another region carries no Location).
        with closing(response), _reading(self.location, name):
            body = response.read()[:2000].decode(errors="replace")
        detail = _detail(response, body)
        if response.status_code == 404 and not detail.startswith(_WHOLE_ARTIFACT_MISSING):
            return None  # this file is absent (NoSuchKey, EntryNotFound): the check says so
        why = {401: "credentials missing or refused", 403: "access denied", 404: "not found"}.get(
            response.status_code, "refused"
        )
        raise ReadError(f"{self.location}/{name}: HTTP {response.status_code} ({why}): {detail}")

    def get(self, name: str) -> bytes | None:
        response = self._send(name, {})
        if response is None:
            return None
        with closing(response), _reading(self.location, name):
            data = bytearray()
            for piece in response.iter_bytes():
                data += piece
                if len(data) > MAX_SMALL_FILE:
                    raise ReadError(f"{self.location}/{name}: larger than {MAX_SMALL_FILE} bytes")
            return bytes(data)

    def head(self, name: str, length: int) -> tuple[bytes, int] | None:
        response = self._send(name, {"Range": f"bytes=0-{length - 1}"})
        if response is None:
            return None
        with closing(response), _reading(self.location, name):
            if response.status_code == 416:  # an empty file: no byte 0
                return b"", _total(response, name, self.location)
            data = _read_at_most(response, length)
            if response.status_code == 200:  # the server ignored Range: the body is the file
                size = response.headers.get("content-length")
                return data, int(size) if size is not None else len(data)
            return data, _total(response, name, self.location)

    def range(self, name: str, start: int, length: int) -> bytes:
        response = self._send(name, {"Range": f"bytes={start}-{start + length - 1}"})
        if response is None:
            raise ReadError(f"{self.location}/{name}: gone while it was read")
        with closing(response), _reading(self.location, name):
            if response.status_code == 200:
                return _read_at_most(response, start + length)[start:]
            return _read_at_most(response, length)

    def stream(self, name: str) -> Iterator[bytes]:
        response = self._send(name, {})
        if response is None:
            raise ReadError(f"{self.location}/{name}: gone while it was read")
        with closing(response), _reading(self.location, name):
            yield from response.iter_bytes(CHUNK)


@contextmanager
def _reading(location: str, name: str) -> Iterator[None]:
    """A connection that breaks mid-answer is a ReadError, like one that never opened."""
    try:
        yield
    except httpx.HTTPError as err:
        raise ReadError(f"{location}/{name}: {err.__class__.__name__}: {err}") from None


# A 404 with one of these codes is not one file missing but the whole artifact (its bucket, its
# repository or revision): the check cannot be made, which is an Error, not a Fail.
_WHOLE_ARTIFACT_MISSING = ("NoSuchBucket", "RepoNotFound", "RevisionNotFound")


def _detail(response: httpx.Response, body: str) -> str:
    """The store's own words: the Hub's X-Error-Code and -Message, an S3 error's Code and
    Message, or the body's start."""
    hub_code = response.headers.get("x-error-code")
    if hub_code:
        return f"{hub_code}: {response.headers.get('x-error-message', '')}".strip()[:300]
    code, message = _S3_CODE.search(body), _S3_MESSAGE.search(body)
    if code:
        return f"{code.group(1)}: {message.group(1) if message else ''}".strip()[:300]
    return " ".join(body.split())[:200] or "(no body)"


def _read_at_most(response: httpx.Response, length: int) -> bytes:
    data = bytearray()
    for piece in response.iter_bytes():
        data += piece
        if len(data) >= length:
            break
    return bytes(data[:length])


def _total(response: httpx.Response, name: str, location: str) -> int:
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    if not match:
        raise ReadError(f"{location}/{name}: a range answer without a usable Content-Range")
    return int(match.group(1))


class HfReader(HttpReader):
    """A Hugging Face Hub repository (or a server answering the Hub's resolve URLs).

    `pin` resolves the revision (a branch or tag) to its commit through the Hub's API
    (`/api/models/org/name/revision/rev`, what `HfApi.model_info` asks), and every later read
    names that commit: a push during the check cannot mix two versions of the checkpoint."""

    def __init__(
        self, client: httpx.Client, location: Location, endpoint: str, token: str | None
    ) -> None:
        super().__init__(client)
        self.location = str(location)
        self.repo, self.revision = location.root, location.revision or "main"
        self.endpoint, self.token = endpoint.rstrip("/"), token

    def pin(self) -> str:
        url = f"{self.endpoint}/api/models/{self.repo}/revision/{quote(self.revision, safe='')}"
        try:
            response = self.client.get(url, headers=self.headers("GET", url, {}))
        except httpx.HTTPError as err:
            raise ReadError(f"{self.location}: {err.__class__.__name__}: {err}") from None
        if response.status_code != 200:
            why = {401: "credentials missing or refused", 403: "access denied", 404: "not found"}
            raise ReadError(
                f"{self.location}: HTTP {response.status_code} "
                f"({why.get(response.status_code, 'refused')}): {_detail(response, response.text)}"
            )
        try:
            commit = str(response.json()["sha"])
        except (ValueError, KeyError, TypeError):
            raise ReadError(f"{self.location}: the Hub's answer names no commit (sha)") from None
        self.revision = commit
        return commit

    def url(self, name: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{quote(self.revision, safe='')}/{quote(name)}"

    def headers(self, method: str, url: str, extra: dict[str, str]) -> dict[str, str]:
        # httpx drops Authorization on a redirect to another host (the Hub's CDN): no leak.
        return {**extra, "Authorization": f"Bearer {self.token}"} if self.token else extra


class S3Reader(HttpReader):
    """An S3 bucket (or an S3-compatible store: path-style requests on its endpoint)."""

    def __init__(
        self,
        client: httpx.Client,
        location: Location,
        *,
        endpoint: str | None,
        region: str,
        credentials: Credentials | None,
        clock: type[datetime] = datetime,
    ) -> None:
        super().__init__(client)
        self.location = str(location)
        self.loc, self.region, self.credentials, self.clock = location, region, credentials, clock
        if endpoint:
            self.base = f"{endpoint.rstrip('/')}/{location.root}"
        else:
            self.base = f"https://{location.root}.s3.{region}.amazonaws.com"

    def url(self, name: str) -> str:
        return f"{self.base}/{encode_key(self.loc.key(name))}"

    def headers(self, method: str, url: str, extra: dict[str, str]) -> dict[str, str]:
        if self.credentials is None:
            return extra
        return sign(
            method, url, extra, self.credentials,
            region=self.region, service="s3", now=self.clock.now(UTC),
        )  # fmt: skip


GCS_XML_ENDPOINT = "https://storage.googleapis.com"


def open_reader(
    location: Location, env: Mapping[str, str], client: httpx.Client, pvc_root: Path
) -> Reader:
    """The reader for `location`, configured from the environment the way each store's own
    clients are (HF_ENDPOINT / HF_TOKEN, AWS_*)."""
    if location.scheme == "pvc":
        return DirReader(pvc_root / location.root / location.path, str(location))
    if location.scheme == "hf":
        hub = env.get("HF_ENDPOINT") or "https://huggingface.co"
        return HfReader(client, location, hub, env.get("HF_TOKEN") or None)
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    credentials = (
        Credentials(access, secret, env.get("AWS_SESSION_TOKEN") or None)
        if access and secret
        else None
    )
    endpoint: str | None
    if location.scheme == "gs":
        endpoint, region = env.get("GCS_ENDPOINT_URL") or GCS_XML_ENDPOINT, "auto"
    else:
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    return S3Reader(client, location, endpoint=endpoint, region=region, credentials=credentials)
