"""The artifact check's judgement: is the target checkpoint the one the spec declares?

Pure: it judges what `gather` read (file bytes, safetensors headers, hashes) and returns one
`Failure` per problem, each naming the file and the field in one sentence an on-call engineer can
act on, e.g. `config.json: quantization_config.bits is 8, the spec says int4
(spec.target.precision)`. What is checked:

- config.json's `quantization_config` is the declared format, written the way its quantizer
  writes it and with the keys the pinned vLLM reads (`AWQConfig.from_config`,
  `GPTQMarlinConfig.from_config`, `Fp8Config.from_config`, `CompressedTensorsConfig`,
  `BitsAndBytesConfig`), with the declared bits and, where the spec gives one, group size;
  fp8 and bitsandbytes may also be quantized online by vLLM from a 16-bit checkpoint that has
  no quantization_config; older AWQ and GPTQ checkpoints keep the settings in
  quant_config.json / quantize_config.json, which vLLM also reads, and so does this check;
- the architecture (`architectures`, `model_type`) and vocabulary (`vocab_size`) are the
  baseline's, and the baseline itself is not quantized;
- the tokenizer files are byte-identical to the baseline's (same SHA-256);
- every shard the index lists exists, has a valid header, is exactly as long as its header says,
  holds the tensors the index puts in it, and the index's `metadata.total_size` is their sum;
- the weights' total size is the memory estimate's weights term (`manifests.gpu_memory`) for the
  declared precision, within a tolerance;
- an optional digest over the files' hashes (see `manifest_digest`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quantrollout.api.spec import PRECISION_BITS
from quantrollout.manifests.gpu_memory import EFFECTIVE_BITS, GIB
from quantrollout.preflight.safetensors import Header

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# What a tokenizer is made of in a Hugging Face checkpoint (the fast tokenizer, its settings,
# the special tokens, and the sentencepiece model of slow tokenizers).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
)
LEGACY_QUANT_FILES = ("quant_config.json", "quantization_config.json", "quantize_config.json")
SMALL_FILES = (CONFIG, INDEX, *TOKENIZER_FILES, *LEGACY_QUANT_FILES)
# Formats vLLM can quantize online from a 16-bit checkpoint (`--quantization fp8|bitsandbytes`).
ONLINE_FORMATS = ("fp8", "bitsandbytes")
UNQUANTIZED_DTYPES = ("F16", "BF16", "F32")

PRECISION_FIELD = "spec.target.precision"
FORMAT_FIELD = "spec.target.format"


@dataclass(frozen=True)
class Failure:
    side: str  # "target" or "baseline"
    file: str
    field: str
    reason: str  # the rest of the sentence, after "file: "

    def __str__(self) -> str:
        prefix = "baseline " if self.side == "baseline" else ""
        return f"{prefix}{self.file}: {self.reason}"


@dataclass(frozen=True)
class Shard:
    """One shard as read: its object size (None: absent), its header or why it has none."""

    name: str
    size: int | None
    header: Header | None = None
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What was read of one artifact."""

    location: str
    files: Mapping[str, bytes | None]  # the small files (SMALL_FILES): bytes, or None if absent
    shards: Mapping[str, Shard] = field(default_factory=dict)
    file_hashes: Mapping[str, str] | None = None  # name -> sha256 hex, when a digest is asked
    revision: str | None = None  # the commit read, where the store has commits (hf://)


@dataclass(frozen=True)
class Expectation:
    """What the spec declares about the target."""

    format: str
    precision: str
    group_size: int | None = None
    parameters: float | None = None  # parameters of the model (modelShape or a preset)
    tolerance: float = 0.5  # the weights may be 1/(1+t) to (1+t) times the estimate
    digest: str | None = None  # "sha256:<hex>" of the manifest (manifest_digest)


@dataclass(frozen=True)
class Report:
    failures: list[Failure]
    facts: dict[str, Any]

    @property
    def passed(self) -> bool:
        return not self.failures


# --- reading the small files ------------------------------------------------------------------


def json_file(
    snapshot: Snapshot, name: str, side: str
) -> tuple[dict[str, Any] | None, Failure | None]:
    raw = snapshot.files.get(name)
    if raw is None:
        return None, Failure(side, name, "", f"missing from {snapshot.location}")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, Failure(side, name, "", f"not valid JSON ({err.__class__.__name__}: {err})")
    if not isinstance(doc, dict):
        return None, Failure(side, name, "", "not a JSON object")
    return doc, None


def shard_names(index: Mapping[str, Any]) -> list[str]:
    """The shards an index's weight_map names, in order of first mention."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        return []
    return list(dict.fromkeys(str(v) for v in weight_map.values()))


def manifest_digest(hashes: Mapping[str, str]) -> str:
    """`sha256:<hex>` of the manifest `<sha256>  <name>\\n` per file, sorted by name: what
    `sha256sum FILES | LC_ALL=C sort -k2 | sha256sum` prints for the same files."""
    manifest = "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))
    return "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def digest_files(snapshot: Snapshot) -> list[str]:
    """The files a digest covers: config.json, the tokenizer files present, the index if any and
    every shard."""
    present = [n for n in (CONFIG, INDEX, *TOKENIZER_FILES) if snapshot.files.get(n) is not None]
    return [*present, *snapshot.shards]


# --- the checks -------------------------------------------------------------------------------


def check(target: Snapshot, baseline: Snapshot | None, expected: Expectation) -> Report:
    failures: list[Failure] = []
    facts: dict[str, Any] = {}
    config, missing = json_file(target, CONFIG, "target")
    if missing:
        failures.append(missing)
    base_config = None
    if baseline is not None:
        base_config, base_missing = json_file(baseline, CONFIG, "baseline")
        if base_missing:
            failures.append(base_missing)
        elif base_config is not None and "quantization_config" in base_config:
            failures.append(
                Failure(
                    "baseline", CONFIG, "quantization_config",
                    "quantization_config is present, but the baseline is the unquantized "
                    "16-bit model (spec.baseline.precision)",
                )
            )  # fmt: skip
    online = False
    if config is not None:
        quant_failures, online = check_quantization(config, expected, target.files)
        failures += quant_failures
        if base_config is not None:
            failures += check_architecture(config, base_config)
    if baseline is not None:
        failures += check_tokenizer(target, baseline)
    shard_failures, weight_bytes = check_shards(target, online)
    failures += shard_failures
    if weight_bytes is not None:
        facts["weightsBytes"] = weight_bytes
        if expected.parameters is not None and not shard_failures:
            weights_file = INDEX if target.files.get(INDEX) is not None else SINGLE
            failure, estimate = check_size(weight_bytes, expected, online, weights_file)
            facts["estimateBytes"] = round(estimate)
            failures += [failure] if failure else []
    if online:
        facts["onlineQuantization"] = True
    facts["shards"] = len(target.shards)
    if target.revision is not None:  # what was checked, so that the tier can serve exactly it
        facts["revision"] = target.revision
    if expected.digest is not None:
        failures += check_digest(target, expected.digest)
    return Report(failures, facts)


def _get(config: Mapping[str, Any], *keys: str) -> tuple[str | None, Any]:
    """The first of `keys` present (vLLM's get_from_keys), and its value."""
    for key in keys:
        if key in config:
            return key, config[key]
    return None, None


# Where quantizers that predate `quantization_config` in config.json keep their settings; vLLM
# reads these when config.json has none (`get_config_filenames` of AWQConfig and GPTQConfig).
LEGACY_FILES: dict[str, tuple[str, ...]] = {
    "awq": LEGACY_QUANT_FILES[:2],
    "gptq": LEGACY_QUANT_FILES[2:],
}


@dataclass(frozen=True)
class Where:
    """The file and the path within it of a quantization config's keys, for reasons."""

    file: str = CONFIG
    path: str = "quantization_config"

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def inner(self, *keys: str) -> Where:
        return Where(self.file, ".".join(filter(None, [self.path, *keys])))

    def fail(self, key: str, reason: str) -> Failure:
        """A failure about `key` here; the reason follows the key's full name."""
        return Failure("target", self.file, self.at(key), f"{self.at(key)} {reason}")


def check_quantization(
    config: Mapping[str, Any],
    expected: Expectation,
    files: Mapping[str, bytes | None] | None = None,
) -> tuple[list[Failure], bool]:
    """Failures, and whether the checkpoint is to be quantized online by vLLM."""
    fmt = expected.format
    qc = config.get("quantization_config")
    where = Where()
    if qc is None:
        legacy = _legacy(fmt, files or {})
        if legacy is not None:
            where, qc = legacy
        elif fmt in ONLINE_FORMATS:
            return [], True
        else:
            return [
                Failure(
                    "target", CONFIG, "quantization_config",
                    f"quantization_config is missing, but the spec says format {fmt} "
                    f"({FORMAT_FIELD}), whose checkpoints carry it",
                )
            ], False  # fmt: skip
    if not isinstance(qc, dict):
        return [Failure("target", where.file, where.path, f"{where.path} is not an object")], False
    method = str(qc.get("quant_method", "")).lower()
    # A legacy file need not name its method: its name does.
    if method != fmt and not (where.file != CONFIG and "quant_method" not in qc):
        shown = repr(qc["quant_method"]) if "quant_method" in qc else "missing"
        return [
            where.fail("quant_method", f"is {shown}, the spec says {fmt} ({FORMAT_FIELD})")
        ], False
    checker = {
        "awq": _awq,
        "gptq": _gptq,
        "fp8": _fp8,
        "compressed-tensors": _compressed_tensors,
        "bitsandbytes": _bitsandbytes,
    }.get(fmt)
    if checker is None:
        return [where.fail("quant_method", f"{fmt} cannot be checked")], False
    return checker(qc, expected, where), False


def _legacy(fmt: str, files: Mapping[str, bytes | None]) -> tuple[Where, Any] | None:
    for name in LEGACY_FILES.get(fmt, ()):
        raw = files.get(name)
        if raw is None:
            continue
        try:
            return Where(name, ""), json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return Where(name, ""), "not JSON"  # reported as not an object
    return None


def _required(
    qc: Mapping[str, Any], where: Where, writer: str, *groups: tuple[str, ...]
) -> list[Failure]:
    return [
        where.fail(keys[-1], f"is missing ({writer} writes it and vLLM reads it)")
        for keys in groups
        if _get(qc, *keys)[0] is None
    ]


def _bits(
    qc: Mapping[str, Any], where: Where, keys: tuple[str, ...], expected: Expectation
) -> list[Failure]:
    key, value = _get(qc, *keys)
    if key is not None and value != PRECISION_BITS[expected.precision]:
        return [
            where.fail(key, f"is {value!r}, the spec says {expected.precision} ({PRECISION_FIELD})")
        ]
    return []


def _group(
    qc: Mapping[str, Any], where: Where, keys: tuple[str, ...], expected: Expectation
) -> list[Failure]:
    key, value = _get(qc, *keys)
    if expected.group_size is None or key is None or value == expected.group_size:
        return []
    return [
        where.fail(
            key,
            f"is {value!r}, the spec says {expected.group_size} (spec.rollout.preflight.artifact.groupSize)",
        )
    ]


def _awq(qc: Mapping[str, Any], expected: Expectation, where: Where) -> list[Failure]:
    # AutoAWQ writes {quant_method: awq, bits, group_size, zero_point, version, modules_to_not_convert}
    # (and, before that, quant_config.json with w_bit, q_group_size, zero_point, version);
    # vLLM's AWQConfig.from_config reads w_bit|bits, q_group_size|group_size and zero_point.
    bits, group = ("w_bit", "bits"), ("q_group_size", "group_size")
    return [
        *_required(qc, where, "AutoAWQ", bits, group, ("zero_point",)),
        *_bits(qc, where, bits, expected),
        *_group(qc, where, group, expected),
    ]


def _gptq(qc: Mapping[str, Any], expected: Expectation, where: Where) -> list[Failure]:
    # AutoGPTQ and GPTQModel write {quant_method: gptq, bits, group_size, desc_act, sym, ...};
    # vLLM's GPTQMarlinConfig.from_config reads bits, group_size, desc_act and sym.
    return [
        *_required(qc, where, "AutoGPTQ", ("bits",), ("group_size",), ("desc_act",), ("sym",)),
        *_bits(qc, where, ("bits",), expected),
        *_group(qc, where, ("group_size",), expected),
    ]


def _fp8(qc: Mapping[str, Any], expected: Expectation, where: Where) -> list[Failure]:
    # vLLM's Fp8Config.from_config reads activation_scheme (static or dynamic).
    failures = _required(qc, where, "an fp8 quantizer", ("activation_scheme",))
    scheme = qc.get("activation_scheme")
    if scheme is not None and scheme not in ("static", "dynamic"):
        failures.append(
            where.fail("activation_scheme", f"is {scheme!r}, vLLM takes static or dynamic")
        )
    return failures


def _compressed_tensors(
    qc: Mapping[str, Any], expected: Expectation, where: Where
) -> list[Failure]:
    # llm-compressor writes {quant_method: compressed-tensors, format, config_groups: {group_0:
    # {targets, weights: {num_bits, type, strategy, group_size, symmetric, ...},
    # input_activations}}, ignore, quantization_status}; every group's weights must be the
    # declared precision: num_bits, and type float for fp8, int for int4/int8.
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return [
            where.fail(
                "config_groups", "is missing or empty (llm-compressor writes one group per scheme)"
            )
        ]
    want_type = "float" if expected.precision == "fp8" else "int"
    failures: list[Failure] = []
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict):
            failures.append(where.inner("config_groups", name).fail("weights", "is missing"))
            continue
        inner = where.inner("config_groups", name, "weights")
        failures += _required(weights, inner, "llm-compressor", ("num_bits",), ("type",))
        failures += _bits(weights, inner, ("num_bits",), expected)
        kind = weights.get("type")
        if kind is not None and kind != want_type:
            failures.append(
                inner.fail(
                    "type", f"is {kind!r}, the spec says {expected.precision} ({PRECISION_FIELD})"
                )
            )
        if weights.get("strategy") == "group":
            failures += _group(weights, inner, ("group_size",), expected)
    return failures


def _bitsandbytes(qc: Mapping[str, Any], expected: Expectation, where: Where) -> list[Failure]:
    # transformers' BitsAndBytesConfig writes load_in_4bit / load_in_8bit (and bnb_4bit_*);
    # vLLM's BitsAndBytesConfig reads the same keys.
    key = "load_in_4bit" if expected.precision == "int4" else "load_in_8bit"
    if qc.get(key) is not True:
        return [
            where.fail(
                key, f"is {qc.get(key)!r}, the spec says {expected.precision} ({PRECISION_FIELD})"
            )
        ]
    return []


def check_architecture(target: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[Failure]:
    failures = []
    for key in ("architectures", "model_type", "vocab_size"):
        if target.get(key) != baseline.get(key):
            failures.append(
                Failure(
                    "target", CONFIG, key,
                    f"{key} is {target.get(key)!r}, the baseline's is {baseline.get(key)!r} "
                    "(a quantized tier must be the same model)",
                )
            )  # fmt: skip
    return failures


def check_tokenizer(target: Snapshot, baseline: Snapshot) -> list[Failure]:
    failures = []
    seen = False
    for name in TOKENIZER_FILES:
        mine, theirs = target.files.get(name), baseline.files.get(name)
        if mine is None and theirs is None:
            continue
        seen = True
        if mine is None:
            failures.append(
                Failure(
                    "target", name, "", f"missing, but the baseline ({baseline.location}) has it"
                )
            )
        elif theirs is None:
            failures.append(
                Failure(
                    "target", name, "", f"present, but the baseline ({baseline.location}) has none"
                )
            )
        elif mine != theirs:
            failures.append(
                Failure(
                    "target", name, "sha256",
                    f"differs from the baseline's (sha256 {_short(mine)} vs {_short(theirs)}): "
                    "the tiers would tokenize differently",
                )
            )  # fmt: skip
    if not seen:
        failures.append(
            Failure(
                "target", "tokenizer.json", "", "no tokenizer files in the target or the baseline"
            )
        )
    return failures


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def check_shards(snapshot: Snapshot, online: bool) -> tuple[list[Failure], int | None]:
    """Failures of the index and shards, and the weights' total bytes (None if unknown)."""
    failures: list[Failure] = []
    index: dict[str, Any] | None = None
    if snapshot.files.get(INDEX) is not None:
        index, bad = json_file(snapshot, INDEX, "target")
        if bad:
            return [bad], None
        names = shard_names(index)  # type: ignore[arg-type]
        if not names:
            return [Failure("target", INDEX, "weight_map", "weight_map is missing or empty")], None
    elif (single := snapshot.shards.get(SINGLE)) is not None and single.size is not None:
        names = [SINGLE]
    else:
        return [
            Failure("target", INDEX, "", f"missing, and so is {SINGLE}: no weights found")
        ], None
    total = 0
    for name in names:
        shard = snapshot.shards.get(name)
        if shard is None or shard.size is None:
            failures.append(Failure("target", name, "", f"missing, but {INDEX} lists it"))
            continue
        if shard.header is None:
            failures.append(Failure("target", name, "header", f"unreadable header: {shard.error}"))
            continue
        if shard.size != shard.header.file_bytes:
            failures.append(
                Failure(
                    "target", name, "size",
                    f"is {shard.size} bytes, its header says {shard.header.file_bytes} (truncated or corrupt)",
                )
            )  # fmt: skip
        total += shard.header.data_bytes
        if online:
            wide = {t.dtype for t in shard.header.tensors.values()} - set(UNQUANTIZED_DTYPES)
            if wide:
                failures.append(
                    Failure(
                        "target", name, "dtype",
                        f"holds {', '.join(sorted(wide))} tensors, but with no quantization_config "
                        "vLLM quantizes online and needs a 16-bit checkpoint",
                    )
                )  # fmt: skip
    if index is not None and not failures:
        failures += _index_agrees(index, snapshot, total)
    return failures, (total if not failures else None)


def _index_agrees(index: Mapping[str, Any], snapshot: Snapshot, total: int) -> list[Failure]:
    failures = []
    for tensor, shard_name in index["weight_map"].items():
        header = snapshot.shards[str(shard_name)].header
        if header is not None and tensor not in header.tensors:
            failures.append(
                Failure(
                    "target", INDEX, f"weight_map.{tensor}",
                    f"weight_map puts {tensor} in {shard_name}, whose header has no such tensor",
                )
            )  # fmt: skip
            break  # one is enough to say the index and the shards disagree
    declared = (index.get("metadata") or {}).get("total_size")
    if declared is not None and declared != total:
        failures.append(
            Failure(
                "target", INDEX, "metadata.total_size",
                f"metadata.total_size is {declared}, the shards' headers add up to {total}",
            )
        )  # fmt: skip
    return failures


def expected_weight_bytes(parameters: float, precision: str) -> float:
    """The weights term of `gpu_memory.estimate`: parameters x effective bits / 8."""
    return parameters * EFFECTIVE_BITS[precision] / 8


def check_size(
    weight_bytes: int, expected: Expectation, online: bool, file: str = INDEX
) -> tuple[Failure | None, float]:
    assert expected.parameters is not None
    # An online-quantized checkpoint is stored in 16 bits; vLLM narrows it while loading.
    stored = "fp16" if online else expected.precision
    estimate = expected_weight_bytes(expected.parameters, stored)
    low, high = estimate / (1 + expected.tolerance), estimate * (1 + expected.tolerance)
    if low <= weight_bytes <= high:
        return None, estimate
    return Failure(
        "target", file, "size",
        f"the shards hold {human_bytes(weight_bytes)} of weights; {expected.parameters / 1e9:.3g}B "
        f"parameters at {stored} should take about {human_bytes(estimate)} "
        f"(within x{1 + expected.tolerance:g}) ({PRECISION_FIELD})",
    ), estimate  # fmt: skip


def human_bytes(count: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f} B"


def check_digest(snapshot: Snapshot, want: str) -> list[Failure]:
    if snapshot.file_hashes is None:
        return [Failure("target", "(digest)", "digest", "the files were not hashed")]
    got = manifest_digest(snapshot.file_hashes)
    if got == want:
        return []
    return [
        Failure(
            "target", "(digest)", "digest",
            f"the files' manifest digest is {got}, the spec says {want} "
            "(spec.rollout.preflight.artifact.digest)",
        )
    ]  # fmt: skip
