"""A minimal Hugging Face Hub endpoint over a directory, on loopback.

`<root>/<org>/<name>/<files>` is served as repository org/name at revision `main` (and at its
commit id, a hash of the files), the way the Hub answers:
- `GET|HEAD /<org>/<name>/resolve/<revision>/<file>`: the file, with `Range` (206 and
  Content-Range), `ETag`, `X-Repo-Commit` and Content-Length, as huggingface_hub expects;
- `GET /api/models/<org>/<name>[/revision/<revision>]`: `{"id", "sha", "siblings":
  [{"rfilename"}]}`;
- errors as the Hub sends them, with `X-Error-Code`: 404 EntryNotFound (no such file),
  404 RevisionNotFound, 401 RepoNotFound (the Hub answers 401 for a repository that does not
  exist), and 401 GatedRepo for every request when the server has a token and the request does
  not bear it.
Ours, so the tests judge it with the official client (`huggingface_hub.hf_hub_download`)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def commit_of(repo: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in repo.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class HubServer:
    def __init__(self, root: Path, token: str | None = None) -> None:
        self.root, self.token = root, token
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _send(self, status: int, headers: dict[str, str], body: bytes, send: bool) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if send:
                    self.wfile.write(body)

            def _error(
                self, status: int, message: str, send: bool, code_override: str | None = None
            ) -> None:
                body = json.dumps({"error": message}).encode()
                code = {401: "GatedRepo", 404: "EntryNotFound"}.get(status, "Error")
                code = code_override or code
                headers = {"Content-Type": "application/json", "X-Error-Code": code}
                self._send(status, {**headers, "X-Error-Message": message}, body, send)

            def _serve(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._error(401, "Access to this repository is restricted.", body)
                    return
                api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if api:
                    self._api(api.group(1), api.group(2) or "main", body)
                    return
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if resolve:
                    repo_id, revision, name = resolve.groups()
                    self._file(repo_id, revision, name, body)
                    return
                self._error(404, "not found", body)

            def _repo(self, repo_id: str, revision: str, send: bool) -> tuple[Path, str] | None:
                """The repository and its commit, or None after answering the Hub's error."""
                repo = hub.root / repo_id
                if ".." in repo_id or not repo.is_dir():
                    self._error(401, f"Repository {repo_id} not found", send, "RepoNotFound")
                    return None
                commit = commit_of(repo)
                if revision not in ("main", commit):
                    self._error(404, f"Revision {revision} not found", send, "RevisionNotFound")
                    return None
                return repo, commit

            def _api(self, repo_id: str, revision: str, send: bool) -> None:
                found = self._repo(repo_id, revision, send)
                if found is None:
                    return
                repo, commit = found
                siblings = [
                    {"rfilename": str(p.relative_to(repo))}
                    for p in sorted(repo.rglob("*"))
                    if p.is_file()
                ]
                doc = {"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": siblings}
                self._send(
                    200, {"Content-Type": "application/json"}, json.dumps(doc).encode(), send
                )

            def _file(self, repo_id: str, revision: str, name: str, send: bool) -> None:
                found = self._repo(repo_id, revision, send)
                if found is None:
                    return
                repo, commit = found
                path = repo / name
                if ".." in name.split("/") or not path.is_file():
                    self._error(404, f"Entry {name} not found", send)
                    return
                data = path.read_bytes()
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Accept-Ranges": "bytes",
                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                    "X-Repo-Commit": commit,
                }
                wanted = self.headers.get("Range")
                if wanted is None:
                    self._send(200, headers, data, send)
                    return
                match = _RANGE.match(wanted.strip())
                if not match or match.groups() == ("", ""):
                    self._error(416, f"bad range {wanted}", send)
                    return
                first, last = match.groups()
                if first == "":  # a suffix: the last N bytes
                    start, end = max(0, len(data) - int(last)), len(data) - 1
                else:
                    start = int(first)
                    end = min(int(last), len(data) - 1) if last else len(data) - 1
                if start >= len(data) or start > end:
                    self._send(416, {**headers, "Content-Range": f"bytes */{len(data)}"}, b"", send)
                    return
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                self._send(206, headers, data[start : end + 1], send)

        return Handler
