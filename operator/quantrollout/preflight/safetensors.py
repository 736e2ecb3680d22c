"""The header of a safetensors file, read without its tensors.

Pure. A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`)
and then the tensors' bytes. Reading the first 8 + N bytes (one range request) says every
tensor's dtype and shape and how long the file must be, without downloading the weights.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

# Bytes per element of each dtype the safetensors format names. Sub-byte dtypes (F4, F6_*) are
# left out on purpose: a file holding them is reported as unknown rather than sized wrongly.
DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# The reference implementation refuses headers above 100 MB; so do we, before allocating.
MAX_HEADER_BYTES = 100_000_000
PREFIX_BYTES = 8


class HeaderError(ValueError):
    """The header is not a valid safetensors header; the message says why."""


@dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    length: int  # N, the JSON's length
    tensors: dict[str, Tensor]
    metadata: dict[str, str]

    @property
    def data_bytes(self) -> int:
        """Bytes of tensor data after the header (the largest end offset)."""
        return max((t.end for t in self.tensors.values()), default=0)

    @property
    def file_bytes(self) -> int:
        """How long the whole file must be."""
        return PREFIX_BYTES + self.length + self.data_bytes

    @property
    def parameters(self) -> int:
        return sum(t.elements for t in self.tensors.values())


def header_length(prefix: bytes) -> int:
    """N from the first 8 bytes."""
    if len(prefix) < PREFIX_BYTES:
        raise HeaderError(f"the file is {len(prefix)} bytes long, shorter than its 8-byte prefix")
    (length,) = struct.unpack("<Q", prefix[:PREFIX_BYTES])
    if length < 2 or length > MAX_HEADER_BYTES:
        raise HeaderError(f"the header length is {length} bytes (must be 2 to {MAX_HEADER_BYTES})")
    return int(length)


def parse_header(data: bytes) -> Header:
    """The header from the first 8 + N bytes of the file (more bytes are ignored)."""
    length = header_length(data)
    raw = data[PREFIX_BYTES : PREFIX_BYTES + length]
    if len(raw) < length:
        raise HeaderError(f"the header is {length} bytes but only {len(raw)} were read")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HeaderError(f"the header is not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise HeaderError("the header is not a JSON object")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise HeaderError("__metadata__ is not an object")
    tensors = {name: _tensor(name, entry) for name, entry in doc.items()}
    _check_layout(tensors)
    return Header(length, tensors, {str(k): str(v) for k, v in metadata.items()})


def _tensor(name: str, entry: object) -> Tensor:
    if not isinstance(entry, dict):
        raise HeaderError(f"tensor {name}: not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES:
        raise HeaderError(f"tensor {name}: dtype {dtype!r} is not one this check can size")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise HeaderError(f"tensor {name}: shape {shape!r} is not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise HeaderError(f"tensor {name}: data_offsets {offsets!r} is not [begin, end]")
    tensor = Tensor(str(dtype), tuple(shape), offsets[0], offsets[1])
    if tensor.end - tensor.begin != tensor.elements * DTYPE_BYTES[tensor.dtype]:
        raise HeaderError(
            f"tensor {name}: {tensor.end - tensor.begin} bytes for {tensor.dtype} {list(shape)}, "
            f"which needs {tensor.elements * DTYPE_BYTES[tensor.dtype]}"
        )
    return tensor


def _check_layout(tensors: dict[str, Tensor]) -> None:
    """Tensors must tile the data section without gaps or overlaps (the format requires it)."""
    position = 0
    for name, tensor in sorted(tensors.items(), key=lambda item: item[1].begin):
        if tensor.begin != position:
            raise HeaderError(f"tensor {name}: starts at {tensor.begin}, expected {position}")
        position = tensor.end
