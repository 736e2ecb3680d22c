"""Tiny checkpoints laid out the way real ones are, for the artifact check's tests.

The safetensors files are written by the `safetensors` package (through numpy: no torch), the
config.json files carry the key sets real repositories carry, and the weights of each format
have the tensor names, dtypes and shapes its quantizer writes, so their sizes relate to the
parameter count as a real checkpoint's do (embeddings and the LM head stay 16-bit).

Key sets, as the quantizers write them (read in their sources):
- the base model: meta-llama/Meta-Llama-3-8B-Instruct's config.json keys;
- AWQ: AutoAWQ's `AwqConfig.to_transformers_dict()` (casper-hansen/AutoAWQ,
  awq/models/_config.py): quant_method, zero_point, group_size, bits, version (lower case),
  modules_to_not_convert;
- GPTQ: AutoGPTQ's `BaseQuantizeConfig.to_dict()` (AutoGPTQ/AutoGPTQ, auto_gptq/quantization/
  config.py): bits, group_size, damp_percent, desc_act, static_groups, sym, true_sequential,
  model_name_or_path, model_file_base_name, is_marlin_format, quant_method (the layout of
  TheBloke/Llama-2-7B-Chat-GPTQ's config.json, which Intel Neural Compressor's
  `change_config_to_hf_format` cites as its model);
- fp8: AutoFP8's `save_quantized_model` (neuralmagic/AutoFP8, auto_fp8/quantize.py):
  quant_method fp8, activation_scheme, ignored_layers;
- compressed-tensors: what llm-compressor writes (config_groups.group_0 with targets, weights
  {actorder, block_structure, dynamic, group_size, num_bits, observer, observer_kwargs, strategy,
  symmetric, type}, input_activations, output_activations; format, ignore, kv_cache_scheme,
  quant_method, quantization_status), as public conversion scripts reproduce it;
- bitsandbytes: transformers' `BitsAndBytesConfig.to_dict()`.
numpy has no float8 type: fp8 weights are written as U8 (the same bytes per element); the
check sizes bytes and reads dtypes, it never decodes values.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

Tensors = dict[str, "np.ndarray[Any, Any]"]


@dataclass(frozen=True)
class Shape:
    """A small Llama: linear layers dominate the parameters, as in the models users deploy."""

    layers: int = 4
    hidden: int = 256
    intermediate: int = 512
    vocab: int = 512
    group_size: int = 128

    @property
    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of every quantized linear layer."""
        h, i = self.hidden, self.intermediate
        out = []
        for layer in range(self.layers):
            p = f"model.layers.{layer}"
            out += [(f"{p}.self_attn.{n}_proj", h, h) for n in "qkvo"]
            out += [(f"{p}.mlp.gate_proj", h, i), (f"{p}.mlp.up_proj", h, i)]
            out += [(f"{p}.mlp.down_proj", i, h)]
        return out

    @property
    def parameters(self) -> int:
        """Parameters of the unquantized model (what modelShape.parametersB counts)."""
        linear = sum(i * o for _, i, o in self.linears)
        norms = (2 * self.layers + 1) * self.hidden
        return linear + norms + 2 * self.vocab * self.hidden


BASE_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128009,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}

QUANTIZATION_CONFIGS: dict[str, dict[str, Any]] = {
    "awq": {
        "bits": 4,
        "group_size": 128,
        "modules_to_not_convert": None,
        "quant_method": "awq",
        "version": "gemm",
        "zero_point": True,
    },
    "gptq": {
        "bits": 4,
        "group_size": 128,
        "damp_percent": 0.01,
        "desc_act": False,
        "static_groups": False,
        "sym": True,
        "true_sequential": True,
        "model_name_or_path": None,
        "model_file_base_name": "model",
        "is_marlin_format": False,
        "quant_method": "gptq",
    },
    "fp8": {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]},
    "compressed-tensors": {
        "config_groups": {
            "group_0": {
                "input_activations": None,
                "output_activations": None,
                "targets": ["Linear"],
                "weights": {
                    "actorder": None,
                    "block_structure": None,
                    "dynamic": False,
                    "group_size": 128,
                    "num_bits": 4,
                    "observer": "minmax",
                    "observer_kwargs": {},
                    "strategy": "group",
                    "symmetric": True,
                    "type": "int",
                },
            }
        },
        "format": "pack-quantized",
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    },
    "bitsandbytes": {
        "_load_in_4bit": True,
        "_load_in_8bit": False,
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": False,
        "llm_int8_enable_fp32_cpu_offload": False,
        "llm_int8_has_fp16_weight": False,
        "llm_int8_skip_modules": None,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": True,
        "load_in_8bit": False,
        "quant_method": "bitsandbytes",
    },
}

TOKENIZER = {
    "tokenizer.json": {
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "<|begin_of_text|>", "special": True}],
        "model": {"type": "BPE", "vocab": {"a": 1, "b": 2}, "merges": ["a b"]},
    },
    "tokenizer_config.json": {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast",
    },
    "special_tokens_map.json": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
}


def _f16(rng: np.random.Generator, *shape: int) -> np.ndarray[Any, Any]:
    return rng.standard_normal(shape).astype(np.float16)


def _ints(rng: np.random.Generator, dtype: type, *shape: int) -> np.ndarray[Any, Any]:
    return rng.integers(0, 2**7, size=shape).astype(dtype)


def tensors(shape: Shape, fmt: str | None, bits: int = 4, seed: int = 0) -> Tensors:
    """The tensors of a checkpoint: 16-bit when `fmt` is None, else as `fmt` stores its layers."""
    rng = np.random.default_rng(seed)
    out: Tensors = {
        "model.embed_tokens.weight": _f16(rng, shape.vocab, shape.hidden),
        "lm_head.weight": _f16(rng, shape.vocab, shape.hidden),
        "model.norm.weight": _f16(rng, shape.hidden),
    }
    for layer in range(shape.layers):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{layer}.{norm}.weight"] = _f16(rng, shape.hidden)
    pack = 32 // bits  # values per int32
    g = shape.group_size
    for name, i, o in shape.linears:
        if fmt is None:
            out[f"{name}.weight"] = _f16(rng, o, i)
        elif fmt in ("awq", "gptq"):  # qweight packs along out (AWQ) or in (GPTQ) features
            q = (i, o // pack) if fmt == "awq" else (i // pack, o)
            out[f"{name}.qweight"] = _ints(rng, np.int32, *q)
            out[f"{name}.qzeros"] = _ints(rng, np.int32, i // g, o // pack)
            out[f"{name}.scales"] = _f16(rng, i // g, o)
            if fmt == "gptq":
                out[f"{name}.g_idx"] = _ints(rng, np.int32, i)
        elif fmt == "fp8":
            out[f"{name}.weight"] = _ints(rng, np.uint8, o, i)
            out[f"{name}.weight_scale"] = rng.random(1).astype(np.float32)
            out[f"{name}.input_scale"] = rng.random(1).astype(np.float32)
        elif fmt == "compressed-tensors":
            out[f"{name}.weight_packed"] = _ints(rng, np.int32, o, i // pack)
            out[f"{name}.weight_scale"] = _f16(rng, o, i // g)
            out[f"{name}.weight_shape"] = np.array([o, i], dtype=np.int64)
        elif fmt == "bitsandbytes":
            out[f"{name}.weight"] = _ints(rng, np.uint8, o * i * bits // 8, 1)
            out[f"{name}.weight.absmax"] = rng.random(o * i // 64).astype(np.float32)
        else:
            raise ValueError(f"unknown format {fmt}")
    return out


def write(
    directory: Path,
    *,
    fmt: str | None = None,
    bits: int = 4,
    shape: Shape | None = None,
    shards: int = 2,
    config: dict[str, Any] | None = None,
    quantization: dict[str, Any] | None = None,
    tokenizer: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A checkpoint in `directory`: config.json (BASE_CONFIG with the shape's sizes, the format's
    quantization_config or `quantization`), the tokenizer files, and the weights in `shards`
    safetensors files with an index (one `model.safetensors` when shards is 1)."""
    shape = shape or Shape()
    directory.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(config or BASE_CONFIG)
    cfg.update(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        vocab_size=shape.vocab,
    )
    if quantization is not None:
        cfg["quantization_config"] = quantization
    elif fmt is not None:
        cfg["quantization_config"] = copy.deepcopy(QUANTIZATION_CONFIGS[fmt])
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    for name, doc in (tokenizer or TOKENIZER).items():
        (directory / name).write_text(json.dumps(doc, indent=2))
    weights = tensors(shape, fmt, bits, seed)
    if shards == 1:
        save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory
    names = sorted(weights)
    weight_map, total = {}, 0
    for n in range(shards):
        part = {k: weights[k] for k in names[n::shards]}
        file = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
        total += sum(int(a.nbytes) for a in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return directory
