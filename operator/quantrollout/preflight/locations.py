"""Artifact locations as the spec writes them (`spec.baseline.artifact`, `spec.target.artifact`).

Pure. `s3://bucket/prefix`, `gs://bucket/prefix`, `hf://org/name[@revision]` and
`pvc://claim/path` (see `quantrollout.api.spec.ARTIFACT_PATTERN`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Scheme = Literal["s3", "gs", "hf", "pvc"]
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Location:
    scheme: Scheme
    root: str  # the bucket, the Hugging Face repository (org/name) or the claim
    path: str  # the prefix within it, without leading or trailing slashes ("" for the top)
    revision: str | None = None  # hf:// only: a branch, tag or commit (default main)

    def __str__(self) -> str:
        if self.scheme == "hf":
            return f"hf://{self.root}" + (f"@{self.revision}" if self.revision else "")
        return f"{self.scheme}://{self.root}" + (f"/{self.path}" if self.path else "")

    def key(self, name: str) -> str:
        """The object key (or relative path) of a file of the checkpoint."""
        return f"{self.path}/{name}" if self.path else name


def parse(artifact: str) -> Location:
    """The location an artifact URL names; ValueError says what is wrong with it."""
    scheme, sep, rest = artifact.partition("://")
    if not sep or scheme not in ("s3", "gs", "hf", "pvc"):
        raise ValueError(f"{artifact!r}: the scheme must be s3://, gs://, hf:// or pvc://")
    rest = rest.strip("/")
    if scheme == "hf":
        repo, at, revision = rest.partition("@")
        if not _HF_REPO.match(repo):
            raise ValueError(f"{artifact!r}: hf:// takes org/name[@revision]")
        if at and not revision:
            raise ValueError(f"{artifact!r}: nothing after @ (a branch, tag or commit)")
        return Location("hf", repo, "", revision or None)
    root, _, path = rest.partition("/")
    if not root:
        raise ValueError(f"{artifact!r}: no {'claim' if scheme == 'pvc' else 'bucket'}")
    if scheme in ("s3", "gs") and not _BUCKET.match(root):
        raise ValueError(f"{artifact!r}: {root!r} is not a bucket name")
    if ".." in path.split("/"):
        raise ValueError(f"{artifact!r}: '..' is not allowed in the path")
    return Location(scheme, root, path.strip("/"))  # type: ignore[arg-type]
