"""Reading what the artifact check judges, through a `Reader`: the small files, every shard's
safetensors header (a range request or two per shard, never the weights) and, when a digest is
asked for, every file's SHA-256 (which does read the weights, once, as a stream)."""

from __future__ import annotations

import hashlib
import json

from quantrollout.preflight.artifact import (
    CONFIG,
    INDEX,
    SINGLE,
    SMALL_FILES,
    TOKENIZER_FILES,
    Shard,
    Snapshot,
    digest_files,
    shard_names,
)
from quantrollout.preflight.readers import Reader
from quantrollout.preflight.safetensors import (
    PREFIX_BYTES,
    HeaderError,
    header_length,
    parse_header,
)

# One request reads the headers of most shards whole (a shard of a large model lists a few
# hundred tensors: tens of KiB); a longer header takes a second request for the rest.
FIRST_READ = 64 * 1024


def read_shard(reader: Reader, name: str) -> Shard:
    first = reader.head(name, FIRST_READ)
    if first is None:
        return Shard(name, None)
    data, size = first
    try:
        length = header_length(data)
        if PREFIX_BYTES + length > size:
            raise HeaderError(f"the header is {length} bytes, longer than the {size}-byte file")
        if PREFIX_BYTES + length > len(data):
            data += reader.range(name, len(data), PREFIX_BYTES + length - len(data))
        return Shard(name, size, parse_header(data))
    except HeaderError as err:
        return Shard(name, size, error=str(err))


def read_snapshot(reader: Reader, *, weights: bool, hashes: bool = False) -> Snapshot:
    """The small files; with `weights`, the shards' headers too; with `hashes`, every file's
    SHA-256 (for the digest)."""
    revision = reader.pin()
    names = SMALL_FILES if weights else (CONFIG, *TOKENIZER_FILES)
    files = {name: reader.get(name) for name in names}
    shards: dict[str, Shard] = {}
    if weights:
        for name in _listed_shards(files.get(INDEX)):
            shards[name] = read_shard(reader, name)
    snapshot = Snapshot(reader.location, files, shards, revision=revision)
    if not hashes:
        return snapshot
    file_hashes = {}
    for name in digest_files(snapshot):
        if name in shards and shards[name].size is None:
            continue  # absent: the shard check says so
        digest = hashlib.sha256()
        small = files.get(name)
        if small is not None:
            digest.update(small)
        else:
            for piece in reader.stream(name):
                digest.update(piece)
        file_hashes[name] = digest.hexdigest()
    return Snapshot(reader.location, files, shards, file_hashes, revision)


def _listed_shards(index: bytes | None) -> list[str]:
    if index is None:
        return [SINGLE]
    try:
        doc = json.loads(index)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []  # the check reports the broken index
    return shard_names(doc) if isinstance(doc, dict) else []
