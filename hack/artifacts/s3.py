"""versitygw with its posix backend: a real S3-compatible server over a directory, on loopback.

`S3Server(root)` starts it on a free port with a root key pair; `create_bucket` and `put_object`
go through the S3 API (SigV4-signed PUTs), so the bucket and objects carry the metadata the
gateway writes for its own objects."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import httpx

from localstack.controlplane import tool_path
from localstack.procs import free_port
from quantrollout.preflight.sigv4 import Credentials, encode_key, sign

ACCESS_KEY = "quantrollout-test"
SECRET_KEY = "quantrollout-test-secret-key"
REGION = "us-east-1"


class S3Server:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.credentials = Credentials(ACCESS_KEY, SECRET_KEY)
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """What a client of this server is given (the AWS_* names every S3 client reads)."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def start(self) -> S3Server:
        binary = tool_path("versitygw", "VERSITYGW")
        data, sidecar = self.state / "data", self.state / "sidecar"
        data.mkdir(parents=True, exist_ok=True)
        sidecar.mkdir(parents=True, exist_ok=True)
        log = (self.state / "versitygw.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary, "--access", ACCESS_KEY, "--secret", SECRET_KEY, "--region", REGION,
                "--port", f"127.0.0.1:{self.port}", "posix", "--sidecar", str(sidecar), str(data),
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"versitygw exited: {(self.state / 'versitygw.log').read_text()[-500:]}"
                )
            try:
                httpx.get(self.url, timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("versitygw did not listen within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _put(self, path: str, body: bytes) -> None:
        url = f"{self.url}/{path}"
        headers = sign(
            "PUT", url, {}, self.credentials, region=REGION, service="s3",
            now=datetime.now(UTC), payload_hash=hashlib.sha256(body).hexdigest(),
        )  # fmt: skip
        response = httpx.put(url, content=body, headers=headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"PUT {path}: HTTP {response.status_code}: {response.text[:300]}")

    def create_bucket(self, bucket: str) -> None:
        self._put(bucket, b"")

    def put_object(self, bucket: str, key: str, body: bytes) -> None:
        self._put(f"{bucket}/{encode_key(key)}", body)

    def upload_dir(self, bucket: str, prefix: str, directory: Path) -> None:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                self.put_object(bucket, f"{prefix}/{path.name}", path.read_bytes())
