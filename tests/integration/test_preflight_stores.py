"""`quantrollout preflight artifact` against real stores on loopback: versitygw (an S3 server
that verifies SigV4), the local Hugging Face endpoint (judged first by the official
`huggingface_hub` client) and a directory standing for a mounted claim. The checkpoints are
real safetensors files (hack/artifacts/checkpoints.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from artifacts import checkpoints
from artifacts.hub import HubServer, commit_of
from artifacts.s3 import S3Server
from quantrollout.preflight.gather import FIRST_READ
from quantrollout.preflight.locations import parse
from quantrollout.preflight.readers import ReadError, open_reader

PARAMS_B = str(checkpoints.Shape().parameters / 1e9)
AWQ = ["--format", "awq", "--precision", "int4", "--parameters-b", PARAMS_B]


def preflight(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "quantrollout.cli.main", "preflight", "artifact", *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    checkpoints.write(root / "base")
    checkpoints.write(root / "awq", fmt="awq")
    gptq8 = {**checkpoints.QUANTIZATION_CONFIGS["gptq"], "bits": 8}
    checkpoints.write(root / "gptq8", fmt="gptq", bits=8, quantization=gptq8)
    return root


# --- S3 (versitygw) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        server.create_bucket("models")
        for name in ("base", "awq", "gptq8"):
            server.upload_dir("models", f"llama/{name}", models / name)
        torn = models / "awq"
        for path in torn.iterdir():
            if path.name != "model-00002-of-00002.safetensors":
                server.put_object("models", f"llama/torn/{path.name}", path.read_bytes())
        yield server


def test_s3_checkpoint_passes(s3: S3Server) -> None:
    code, doc = preflight(
        "--target", "s3://models/llama/awq", "--baseline", "s3://models/llama/base", *AWQ,
        env=s3.env(),
    )  # fmt: skip
    assert (code, doc["verdict"], doc["reasons"]) == (0, "Pass", [])
    assert doc["facts"]["shards"] == 2


def test_s3_wrong_bits_and_missing_shard_fail_with_reasons(s3: S3Server) -> None:
    code, doc = preflight(
        "--target", "s3://models/llama/gptq8", "--baseline", "s3://models/llama/base",
        "--format", "gptq", "--precision", "int4", env=s3.env(),
    )  # fmt: skip
    assert code == 1
    assert doc["reasons"] == [
        "config.json: quantization_config.bits is 8, the spec says int4 (spec.target.precision)"
    ]
    assert doc["failures"] == [
        {"file": "config.json", "field": "quantization_config.bits", "side": "target"}
    ]
    code, doc = preflight(
        "--target", "s3://models/llama/torn", "--baseline", "s3://models/llama/base", *AWQ,
        env=s3.env(),
    )  # fmt: skip
    assert code == 1
    assert doc["reasons"] == [
        "model-00002-of-00002.safetensors: missing, but model.safetensors.index.json lists it"
    ]


def test_s3_checks_the_signature(s3: S3Server) -> None:
    """The server refuses a wrong secret and an unsigned request: the signature is what lets
    the check in, and a refusal is an Error (could not check), not a Fail."""
    code, doc = preflight(
        "--target", "s3://models/llama/awq", *AWQ,
        env={**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong"},
    )  # fmt: skip
    assert code == 3
    assert doc["verdict"] == "Error"
    [reason] = doc["reasons"]
    assert reason.startswith("s3://models/llama/awq/config.json: HTTP 403 (access denied)")
    assert "SignatureDoesNotMatch: The request signature we calculated" in reason
    unsigned = {**s3.env(), "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    code, doc = preflight("--target", "s3://models/llama/awq", *AWQ, env=unsigned)
    assert code == 3
    assert "HTTP 403" in doc["reasons"][0]


def test_s3_missing_bucket_is_an_error_missing_key_a_failure(s3: S3Server) -> None:
    code, doc = preflight("--target", "s3://nobucket/llama/awq", *AWQ, env=s3.env())
    assert code == 3
    assert doc["reasons"][0].startswith(
        "s3://nobucket/llama/awq/config.json: HTTP 404 (not found): NoSuchBucket"
    )
    code, doc = preflight("--target", "s3://models/llama/nothing-here", *AWQ, env=s3.env())
    assert code == 1
    assert doc["reasons"][0] == "config.json: missing from s3://models/llama/nothing-here"


def test_s3_digest_streams_every_file(s3: S3Server, models: Path) -> None:
    files = sorted(p.name for p in (models / "awq").iterdir())
    shell = f"sha256sum {' '.join(files)} | LC_ALL=C sort -k2 | sha256sum"
    printed = subprocess.run(
        ["sh", "-c", shell], cwd=models / "awq", capture_output=True, text=True, check=True
    )
    digest = "sha256:" + printed.stdout.split()[0]
    code, doc = preflight(
        "--target", "s3://models/llama/awq", *AWQ, "--digest", digest, env=s3.env()
    )
    assert (code, doc["reasons"]) == (0, [])
    code, doc = preflight(
        "--target", "s3://models/llama/awq", *AWQ, "--digest", "sha256:00", env=s3.env()
    )
    assert code == 1
    assert doc["reasons"] == [
        f"(digest): the files' manifest digest is {digest}, the spec says sha256:00 "
        "(spec.rollout.preflight.artifact.digest)"
    ]


# --- the Hugging Face endpoint ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Path:
    root = tmp_path_factory.mktemp("hub")
    (root / "org").mkdir()
    for name in ("base", "awq"):
        os.symlink(models / name, root / "org" / name)
    return root


@pytest.fixture
def hub(hub_root: Path) -> Iterator[HubServer]:
    with HubServer(hub_root) as server:
        yield server


def test_the_official_client_downloads_from_our_hub(
    hub: HubServer, models: Path, tmp_path: Path
) -> None:
    for name in ("config.json", "model-00001-of-00002.safetensors"):
        path = hf_hub_download("org/awq", name, endpoint=hub.url, cache_dir=tmp_path)
        assert Path(path).read_bytes() == (models / "awq" / name).read_bytes()
    commit = commit_of(models / "awq")
    pinned = hf_hub_download(
        "org/awq", "config.json", revision=commit, endpoint=hub.url, cache_dir=tmp_path / "pinned"
    )
    assert commit in pinned
    info = HfApi(endpoint=hub.url).model_info("org/awq")
    assert info.sha == commit
    assert {s.rfilename for s in info.siblings or []} == {
        p.name for p in (models / "awq").iterdir()
    }
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/awq", "nope.json", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            "org/awq", "config.json", revision="v9", endpoint=hub.url, cache_dir=tmp_path
        )
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nope", "config.json", endpoint=hub.url, cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("artifact", "reason"),
    [
        (
            "hf://org/nope",
            "hf://org/nope: HTTP 401 (credentials missing or refused): RepoNotFound",
        ),
        ("hf://org/awq@v9", "hf://org/awq@v9: HTTP 404 (not found): RevisionNotFound"),
    ],
)
def test_a_missing_repository_or_revision_is_an_error_not_a_missing_file(
    hub: HubServer, artifact: str, reason: str
) -> None:
    code, doc = preflight("--target", artifact, *AWQ, env={"HF_ENDPOINT": hub.url})
    assert (code, doc["verdict"]) == (3, "Error")
    assert doc["reasons"][0].startswith(reason)


def test_hf_checkpoint_passes_reading_only_headers(hub: HubServer, models: Path) -> None:
    """Main is resolved to its commit once, every file is read at that commit, and the shards
    only as far as their headers."""
    code, doc = preflight(
        "--target", "hf://org/awq", "--baseline", "hf://org/base", *AWQ,
        env={"HF_ENDPOINT": hub.url},
    )  # fmt: skip
    assert (code, doc["verdict"], doc["reasons"]) == (0, "Pass", [])
    commit = commit_of(models / "awq")
    assert doc["facts"]["revision"] == commit
    shard_reads = {(path, rng) for _, path, rng in hub.requests if path.endswith(".safetensors")}
    assert shard_reads == {
        (
            f"/org/awq/resolve/{commit}/model-0000{n}-of-00002.safetensors",
            f"bytes=0-{FIRST_READ - 1}",
        )
        for n in (1, 2)
    }
    assert not [path for _, path, _ in hub.requests if "/resolve/main/" in path]


def test_hf_pinned_revision_and_a_gated_repository(
    hub_root: Path, models: Path, tmp_path: Path
) -> None:
    commit = commit_of(models / "awq")
    with HubServer(hub_root, token="hf_secret") as gated:
        with pytest.raises(GatedRepoError):
            hf_hub_download("org/awq", "config.json", endpoint=gated.url, cache_dir=tmp_path)
        code, doc = preflight(
            "--target", "hf://org/awq", *AWQ, env={"HF_ENDPOINT": gated.url, "HF_TOKEN": ""}
        )
        assert code == 3
        assert doc["reasons"][0].startswith(
            "hf://org/awq: HTTP 401 (credentials missing or refused): GatedRepo"
        )
        code, doc = preflight(
            "--target", f"hf://org/awq@{commit}", *AWQ,
            env={"HF_ENDPOINT": gated.url, "HF_TOKEN": "hf_secret"},
        )  # fmt: skip
        assert (code, doc["reasons"]) == (0, [])


# --- pvc:// (a mounted directory) -------------------------------------------------------------


def test_pvc_checkpoint_and_the_termination_log(models: Path, tmp_path: Path) -> None:
    mount = tmp_path / "models"
    mount.mkdir()
    os.symlink(models, mount / "weights-claim")  # the Job mounts the claim at <root>/<claim>
    log = tmp_path / "termination-log"
    code, doc = preflight(
        "--target", "pvc://weights-claim/gptq8", "--baseline", "pvc://weights-claim/base",
        "--format", "gptq", "--precision", "int4", "--parameters-b", PARAMS_B,
        "--pvc-root", str(mount), "--termination-log", str(log),
    )  # fmt: skip
    assert code == 1
    assert json.loads(log.read_text()) == doc
    assert len(log.read_bytes()) <= 4096
    assert doc["reasons"][0] == (
        "config.json: quantization_config.bits is 8, the spec says int4 (spec.target.precision)"
    )


class _Misbehaving(BaseHTTPRequestHandler):
    """A store answering S3's region redirect (301 with no Location) for config.json, and
    breaking the connection halfway through every other answer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("/config.json"):
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PermanentRedirect</Code>"
                b"<Message>The bucket you are attempting to access must be addressed using the "
                b"specified endpoint.</Message></Error>"
            )
            self.send_response(301)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"{" * 10)
        self.close_connection = True


@pytest.fixture
def misbehaving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_or_a_broken_answer_is_an_error(misbehaving: str) -> None:
    env = {"AWS_ENDPOINT_URL": misbehaving, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    code, doc = preflight("--target", "s3://models/x", *AWQ, env=env)
    assert code == 3
    assert doc["reasons"] == [
        "s3://models/x/config.json: HTTP 301 (refused): PermanentRedirect: The bucket you are "
        "attempting to access must be addressed using the specified endpoint."
    ]
    with httpx.Client() as client:
        reader = open_reader(parse("s3://models/x"), env, client, Path("/nonexistent"))
        with pytest.raises(
            ReadError, match=r"^s3://models/x/tokenizer.json: RemoteProtocolError: "
        ):
            reader.get("tokenizer.json")
