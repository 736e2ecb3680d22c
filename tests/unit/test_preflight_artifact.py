"""The artifact check on real (tiny) checkpoints read from a directory: safetensors files written
by the `safetensors` package, config.json as each quantizer writes it (hack/artifacts). One
reason per problem, naming the file and the field."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

from artifacts import checkpoints
from quantrollout.preflight import artifact, gather, locations, result, safetensors
from quantrollout.preflight.readers import DirReader

SHAPE = checkpoints.Shape()
PARAMS = float(SHAPE.parameters)


def snapshot(directory: Path, *, weights: bool = True, hashes: bool = False) -> artifact.Snapshot:
    return gather.read_snapshot(
        DirReader(directory, str(directory)), weights=weights, hashes=hashes
    )


def judge(target: Path, baseline: Path | None, **expected: Any) -> list[str]:
    expect = artifact.Expectation(**{"parameters": PARAMS, **expected})
    base = snapshot(baseline, weights=False) if baseline else None
    snap = snapshot(target, hashes=expect.digest is not None)
    return [str(f) for f in artifact.check(snap, base, expect).failures]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoints.write(tmp_path_factory.mktemp("base"))


def write(tmp_path: Path, **kwargs: Any) -> Path:
    return checkpoints.write(tmp_path / "target", **kwargs)


# --- what passes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "precision", "bits"),
    [
        ("awq", "int4", 4),
        ("gptq", "int4", 4),
        ("compressed-tensors", "int4", 4),
        ("bitsandbytes", "int4", 4),
        ("fp8", "fp8", 8),
    ],
)
def test_each_format_as_its_quantizer_writes_it_passes(
    tmp_path: Path, base: Path, fmt: str, precision: str, bits: int
) -> None:
    target = write(tmp_path, fmt=fmt, bits=bits)
    assert judge(target, base, format=fmt, precision=precision, group_size=128) == []


@pytest.mark.parametrize("fmt", ["fp8", "bitsandbytes"])
def test_online_quantization_takes_a_16_bit_checkpoint(
    tmp_path: Path, base: Path, fmt: str
) -> None:
    target = write(tmp_path)  # no quantization_config: vLLM quantizes while loading
    report = artifact.check(
        snapshot(target),
        snapshot(base, weights=False),
        artifact.Expectation(
            format=fmt, precision="fp8" if fmt == "fp8" else "int8", parameters=PARAMS
        ),
    )
    assert report.failures == []
    assert report.facts["onlineQuantization"] is True


def test_a_single_file_checkpoint_passes(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq", shards=1)
    assert judge(target, base, format="awq", precision="int4") == []


def test_gptq_int8_passes_as_int8(tmp_path: Path, base: Path) -> None:
    target = write(
        tmp_path,
        fmt="gptq",
        bits=8,
        quantization={**checkpoints.QUANTIZATION_CONFIGS["gptq"], "bits": 8},
    )
    assert judge(target, base, format="gptq", precision="int8") == []


# --- one reason per problem ------------------------------------------------------------------


def test_bits_that_are_not_the_declared_precision(tmp_path: Path, base: Path) -> None:
    quant = {**checkpoints.QUANTIZATION_CONFIGS["gptq"], "bits": 8}
    target = write(tmp_path, fmt="gptq", bits=8, quantization=quant)
    reasons = judge(target, base, format="gptq", precision="int4")
    assert (
        reasons[0]
        == "config.json: quantization_config.bits is 8, the spec says int4 (spec.target.precision)"
    )
    # int8 weights are ~1.9x what int4 weights of the same model take: the size says so too
    assert reasons[1].startswith(
        "model.safetensors.index.json: the shards hold 3.09 MiB of weights"
    )
    assert len(reasons) == 2


@pytest.mark.parametrize(
    ("fmt", "change", "reason"),
    [
        (
            "awq",
            {"group_size": 64},
            "config.json: quantization_config.group_size is 64, the spec says 128 (spec.rollout.preflight.artifact.groupSize)",
        ),
        (
            "awq",
            {"zero_point": None},
            "config.json: quantization_config.zero_point is missing (AutoAWQ writes it and vLLM reads it)",
        ),
        (
            "awq",
            {"quant_method": "gptq"},
            "config.json: quantization_config.quant_method is 'gptq', the spec says awq (spec.target.format)",
        ),
        (
            "gptq",
            {"desc_act": None},
            "config.json: quantization_config.desc_act is missing (AutoGPTQ writes it and vLLM reads it)",
        ),
        (
            "gptq",
            {"sym": None},
            "config.json: quantization_config.sym is missing (AutoGPTQ writes it and vLLM reads it)",
        ),
        (
            "fp8",
            {"activation_scheme": "weird"},
            "config.json: quantization_config.activation_scheme is 'weird', vLLM takes static or dynamic",
        ),
        (
            "bitsandbytes",
            {"load_in_4bit": False, "load_in_8bit": True},
            "config.json: quantization_config.load_in_4bit is False, the spec says int4 (spec.target.precision)",
        ),
    ],
)
def test_quantization_config_problems(
    tmp_path: Path, base: Path, fmt: str, change: dict[str, Any], reason: str
) -> None:
    quant = {**checkpoints.QUANTIZATION_CONFIGS[fmt], **change}
    quant = {k: v for k, v in quant.items() if v is not None or k == "modules_to_not_convert"}
    bits = 8 if fmt == "fp8" else 4
    target = write(tmp_path, fmt=fmt, bits=bits, quantization=quant)
    precision = "fp8" if fmt == "fp8" else "int4"
    assert judge(target, base, format=fmt, precision=precision, group_size=128) == [reason]


def test_compressed_tensors_weights_of_another_type(tmp_path: Path, base: Path) -> None:
    quant = json.loads(json.dumps(checkpoints.QUANTIZATION_CONFIGS["compressed-tensors"]))
    quant["config_groups"]["group_0"]["weights"].update(type="float", num_bits=8)
    target = write(tmp_path, fmt="compressed-tensors", quantization=quant)
    reasons = judge(target, base, format="compressed-tensors", precision="int4")
    path = "config.json: quantization_config.config_groups.group_0.weights"
    assert reasons == [
        f"{path}.num_bits is 8, the spec says int4 (spec.target.precision)",
        f"{path}.type is 'float', the spec says int4 (spec.target.precision)",
    ]


def test_a_16_bit_checkpoint_declared_awq(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path)
    reasons = judge(target, base, format="awq", precision="int4")
    assert reasons[0] == (
        "config.json: quantization_config is missing, but the spec says format awq "
        "(spec.target.format), whose checkpoints carry it"
    )
    assert "5.50 MiB of weights" in reasons[1]
    assert "should take about 1.86 MiB" in reasons[1]  # gpu_memory: 16-bit embeddings


def test_online_quantization_refuses_an_already_narrow_checkpoint(
    tmp_path: Path, base: Path
) -> None:
    target = write(tmp_path, fmt="awq")
    (target / "config.json").write_text(
        (base / "config.json").read_text()
    )  # no quantization_config
    reasons = judge(target, base, format="fp8", precision="fp8")
    assert reasons[0].startswith(
        "model-00001-of-00002.safetensors: holds I32 tensors, but with no quantization_config"
    )


def test_another_architecture_or_vocabulary(tmp_path: Path, base: Path) -> None:
    config = {
        **checkpoints.BASE_CONFIG,
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
    }
    target = write(tmp_path, fmt="awq", config=config, shape=checkpoints.Shape(vocab=640))
    reasons = judge(target, base, format="awq", precision="int4")
    assert reasons == [
        "config.json: architectures is ['MistralForCausalLM'], the baseline's is ['LlamaForCausalLM'] (a quantized tier must be the same model)",
        "config.json: model_type is 'mistral', the baseline's is 'llama' (a quantized tier must be the same model)",
        "config.json: vocab_size is 640, the baseline's is 512 (a quantized tier must be the same model)",
    ]


def test_a_tokenizer_that_is_not_byte_identical(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq")
    (target / "tokenizer_config.json").write_text(
        (base / "tokenizer_config.json").read_text() + " "
    )
    (target / "special_tokens_map.json").unlink()
    [differs, missing] = judge(target, base, format="awq", precision="int4")
    assert differs.startswith("tokenizer_config.json: differs from the baseline's (sha256 ")
    assert differs.endswith("): the tiers would tokenize differently")
    assert missing == f"special_tokens_map.json: missing, but the baseline ({base}) has it"


def test_a_quantized_baseline(tmp_path: Path) -> None:
    baseline = checkpoints.write(tmp_path / "base", fmt="awq")
    target = write(tmp_path, fmt="awq")
    assert judge(target, baseline, format="awq", precision="int4") == [
        "baseline config.json: quantization_config is present, but the baseline is the "
        "unquantized 16-bit model (spec.baseline.precision)"
    ]


def test_missing_config(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq")
    (target / "config.json").unlink()
    assert judge(target, base, format="awq", precision="int4") == [
        f"config.json: missing from {target}"
    ]


# --- shards -------------------------------------------------------------------------------------


def test_a_shard_the_index_lists_is_missing(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq")
    (target / "model-00002-of-00002.safetensors").unlink()
    assert judge(target, base, format="awq", precision="int4") == [
        "model-00002-of-00002.safetensors: missing, but model.safetensors.index.json lists it"
    ]


def test_a_truncated_shard(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq")
    shard = target / "model-00001-of-00002.safetensors"
    size = shard.stat().st_size
    with shard.open("r+b") as f:
        f.truncate(size - 10)
    [reason] = judge(target, base, format="awq", precision="int4")
    assert reason.startswith(
        f"model-00001-of-00002.safetensors: is {size - 10} bytes, its header says {size}"
    )


def test_a_shard_with_a_broken_header(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq")
    (target / "model-00001-of-00002.safetensors").write_bytes(b"\xff" * 16)
    [reason] = judge(target, base, format="awq", precision="int4")
    assert reason.startswith(
        "model-00001-of-00002.safetensors: unreadable header: the header length is"
    )


def test_an_index_whose_total_size_or_map_disagrees(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq")
    index = json.loads((target / artifact.INDEX).read_text())
    index["metadata"]["total_size"] += 2
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = next(
        s for s in index["weight_map"].values() if s != index["weight_map"][first]
    )
    (target / artifact.INDEX).write_text(json.dumps(index))
    reasons = judge(target, base, format="awq", precision="int4")
    assert reasons[0].startswith(f"model.safetensors.index.json: weight_map puts {first} in ")
    assert reasons[1].startswith("model.safetensors.index.json: metadata.total_size is ")


def test_no_weights_at_all(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq", shards=1)
    (target / "model.safetensors").unlink()
    assert judge(target, base, format="awq", precision="int4") == [
        "model.safetensors.index.json: missing, and so is model.safetensors: no weights found"
    ]


# --- digest -------------------------------------------------------------------------------------


def test_the_digest_is_what_sha256sum_prints(tmp_path: Path, base: Path) -> None:
    target = write(tmp_path, fmt="awq")
    snap = snapshot(target, hashes=True)
    files = artifact.digest_files(snap)
    shell = f"sha256sum {' '.join(files)} | LC_ALL=C sort -k2 | sha256sum"
    printed = subprocess.run(
        ["sh", "-c", shell], cwd=target, capture_output=True, text=True, check=True
    )
    digest = "sha256:" + printed.stdout.split()[0]
    assert snap.file_hashes is not None
    assert artifact.manifest_digest(snap.file_hashes) == digest
    assert judge(target, base, format="awq", precision="int4", digest=digest) == []
    (target / "model-00002-of-00002.safetensors").write_bytes(
        (target / "model-00002-of-00002.safetensors").read_bytes()[:-1] + b"\x01"
    )
    [reason] = judge(target, base, format="awq", precision="int4", digest=digest)
    assert reason.startswith("(digest): the files' manifest digest is sha256:")


# --- safetensors headers ---------------------------------------------------------------------


def test_header_matches_what_safetensors_reads(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    arrays = {
        "a": np.zeros((3, 5), dtype=np.float16),
        "b": np.zeros((7,), dtype=np.int32),
        "c": np.zeros((2, 2, 2), dtype=np.uint8),
        "d": np.zeros((0,), dtype=np.float32),
    }
    save_file(arrays, str(path), metadata={"format": "pt"})
    header = safetensors.parse_header(path.read_bytes())
    with safe_open(str(path), framework="numpy") as f:
        names = f.keys()  # a safe_open handle is not a mapping
        assert set(names) == set(header.tensors)
        for name in names:
            assert header.tensors[name].shape == tuple(f.get_slice(name).get_shape())
            assert header.tensors[name].dtype == f.get_slice(name).get_dtype()
        assert f.metadata() == header.metadata
    assert header.file_bytes == path.stat().st_size
    assert header.parameters == 15 + 7 + 8


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01", "the file is 1 bytes long, shorter than its 8-byte prefix"),
        ((5).to_bytes(8, "little") + b"nope!", "the header is not JSON"),
        ((2).to_bytes(8, "little") + b"[]", "the header is not a JSON object"),
        ((10**12).to_bytes(8, "little"), "the header length is 1000000000000 bytes"),
    ],
)
def test_header_errors(data: bytes, reason: str) -> None:
    with pytest.raises(safetensors.HeaderError, match=reason.replace("(", r"\(")):
        safetensors.parse_header(data)


def _header(entries: dict[str, Any]) -> bytes:
    raw = json.dumps(entries).encode()
    return len(raw).to_bytes(8, "little") + raw


def test_header_offsets_must_match_shapes_and_tile_the_data() -> None:
    with pytest.raises(safetensors.HeaderError, match="6 bytes for F16 \\[2, 2\\], which needs 8"):
        safetensors.parse_header(
            _header({"a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 6]}})
        )
    with pytest.raises(safetensors.HeaderError, match="starts at 16, expected 8"):
        safetensors.parse_header(
            _header(
                {
                    "a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F16", "shape": [2, 2], "data_offsets": [16, 24]},
                }
            )
        )
    with pytest.raises(safetensors.HeaderError, match="dtype 'F4' is not one this check can size"):
        safetensors.parse_header(
            _header({"a": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}})
        )


# --- locations and the termination message -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("s3://models/llama3-8b-awq", locations.Location("s3", "models", "llama3-8b-awq")),
        ("s3://models/a/b/", locations.Location("s3", "models", "a/b")),
        ("gs://bucket", locations.Location("gs", "bucket", "")),
        ("hf://org/name", locations.Location("hf", "org/name", "")),
        ("hf://org/name@v1.0", locations.Location("hf", "org/name", "", "v1.0")),
        ("pvc://claim/path/to", locations.Location("pvc", "claim", "path/to")),
    ],
)
def test_locations(url: str, parsed: locations.Location) -> None:
    assert locations.parse(url) == parsed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://x/y", "the scheme must be"),
        ("hf://justname", "hf:// takes org/name"),
        ("hf://org/name@", "nothing after @"),
        ("pvc://claim/../etc", "'..' is not allowed"),
        ("s3://Bad_Bucket/x", "is not a bucket name"),
    ],
)
def test_bad_locations(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        locations.parse(url)


@given(st.lists(st.text(min_size=0, max_size=400), max_size=60))
def test_the_termination_message_fits_and_keeps_the_first_reasons(reasons: list[str]) -> None:
    doc = {
        "check": "artifact", "target": "s3://b/t", "baseline": "s3://b/b", "verdict": "Fail",
        "reasons": reasons, "failures": [{"file": "f", "field": "x", "side": "target"}] * len(reasons),
        "facts": {"shards": 3},
    }  # fmt: skip
    text = result.termination_message(doc)
    assert len(text.encode()) <= result.TERMINATION_LIMIT
    back = json.loads(text)
    assert back["verdict"] == "Fail"
    kept = back["reasons"]
    assert len(kept) + back["omitted"] == len(reasons)
    for mine, theirs in zip(kept, reasons, strict=False):
        assert mine == theirs or (mine.endswith("…") and theirs.startswith(mine[:-1]))


def test_an_error_result() -> None:
    doc = result.artifact_result(
        "s3://b/t", None, None, "s3://b/t/config.json: HTTP 403 (access denied): x"
    )
    assert doc["verdict"] == "Error"
    assert result.EXIT_CODES["Error"] == 3
    assert json.loads(result.termination_message(doc))["reasons"] == [
        "s3://b/t/config.json: HTTP 403 (access denied): x"
    ]


def test_copying_a_checkpoint_keeps_it_passing(tmp_path: Path, base: Path) -> None:
    """The check reads bytes, not paths: a copy elsewhere is the same checkpoint."""
    target = write(tmp_path, fmt="awq")
    copy = shutil.copytree(target, tmp_path / "copy")
    assert judge(copy, base, format="awq", precision="int4") == []


# --- settings kept outside config.json (older quantizers) -----------------------------------

# AutoAWQ's `AwqConfig.to_dict()`, what it wrote to quant_config.json before quantization_config
# moved into config.json; vLLM still reads it (AWQConfig.get_config_filenames).
LEGACY_AWQ = {
    "zero_point": True,
    "q_group_size": 128,
    "w_bit": 4,
    "version": "GEMM",
    "modules_to_not_convert": None,
}


def _legacy(tmp_path: Path, base: Path, name: str, fmt: str, settings: dict[str, Any]) -> Path:
    target = write(tmp_path, fmt=fmt)
    config = json.loads((target / "config.json").read_text())
    del config["quantization_config"]
    (target / "config.json").write_text(json.dumps(config))
    (target / name).write_text(json.dumps(settings))
    return target


def test_legacy_awq_quant_config_json(tmp_path: Path, base: Path) -> None:
    target = _legacy(tmp_path, base, "quant_config.json", "awq", LEGACY_AWQ)
    assert judge(target, base, format="awq", precision="int4", group_size=128) == []
    (target / "quant_config.json").write_text(json.dumps({**LEGACY_AWQ, "w_bit": 8}))
    [reason] = judge(target, base, format="awq", precision="int4")
    assert reason == "quant_config.json: w_bit is 8, the spec says int4 (spec.target.precision)"


def test_legacy_gptq_quantize_config_json(tmp_path: Path, base: Path) -> None:
    settings = {
        k: v for k, v in checkpoints.QUANTIZATION_CONFIGS["gptq"].items() if k != "quant_method"
    }
    target = _legacy(tmp_path, base, "quantize_config.json", "gptq", settings)
    assert judge(target, base, format="gptq", precision="int4") == []
    (target / "quantize_config.json").write_text(json.dumps({**settings, "quant_method": "awq"}))
    assert judge(target, base, format="gptq", precision="int4") == [
        "quantize_config.json: quant_method is 'awq', the spec says gptq (spec.target.format)"
    ]


def test_a_compressed_tensors_group_without_num_bits(tmp_path: Path, base: Path) -> None:
    quant = json.loads(json.dumps(checkpoints.QUANTIZATION_CONFIGS["compressed-tensors"]))
    del quant["config_groups"]["group_0"]["weights"]["num_bits"]
    target = write(tmp_path, fmt="compressed-tensors", quantization=quant)
    assert judge(target, base, format="compressed-tensors", precision="int4") == [
        "config.json: quantization_config.config_groups.group_0.weights.num_bits is missing "
        "(llm-compressor writes it and vLLM reads it)"
    ]
