"""GPU memory pre-flight: will a tier's weights, KV cache and runtime fit the memory vLLM may use?

Per GPU, a tier needs
    weights    = (body parameters x bits / 8 + embedding parameters x 2 bytes) / tensorParallelSize
                 Quantized checkpoints (AWQ, GPTQ, FP8, compressed-tensors) keep the input
                 embeddings and the LM head in 16 bits: 2 x vocab x hidden parameters, about
                 2 GiB for Llama 3 8B (vocabulary 128256), which a flat "4.6 bits per parameter"
                 under-counts. Body bits include the group scales (int4: 4 + 20/128 for AWQ/GPTQ
                 group 128; int8: 8 + 16/128; fp8: 8).
    KV cache   = 2 (K and V) x layers x max(1, kvHeads / tensorParallelSize) x headDim x 2 bytes
                 x maxModelLen: one full-length sequence, the least vLLM must hold. vLLM
                 replicates KV heads when tensorParallelSize exceeds them, so they are not
                 divided below one per GPU.
    runtime    = CUDA context and NCCL/cuBLAS workspaces (1 GiB), CUDA graphs (1 GiB) and the
                 activations of the profiling run: max_num_batched_tokens (8192) x hidden x 2 bytes
                 x 12 live tensors, plus fp32 logits for max_num_seqs (1024) x vocab (2 GiB when the
                 shape has no hidden size or vocabulary).
and has `gpu.memoryGiB x gpuMemoryUtilization`. docs/vllm.md sets these estimates beside the
weights vLLM itself reports loading ("Model loading took ... GiB") for the same models.
The point is to refuse a tier that cannot possibly load, with the numbers, before it burns
GPU-hours crash-looping; the estimates lean to the safe side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quantrollout.api.resolve import Tier
from quantrollout.api.spec import ModelShape

GIB = 1024**3
KV_BYTES = 2  # fp16/bf16 KV cache (vLLM's default kv-cache-dtype "auto")
CONTEXT_GIB = 1.0  # CUDA context, NCCL and cuBLAS workspaces (vLLM's "non-torch memory")
CUDA_GRAPHS_GIB = 1.0  # graphs for every captured batch size
ACTIVATION_TOKENS = 8192  # max_num_batched_tokens vLLM profiles with on a large GPU
ACTIVATION_TENSORS = 12  # hidden-sized fp16 tensors alive at the peak of a layer (MLP included)
LOGIT_SEQS = 1024  # max_num_seqs whose fp32 logits the sampler holds at once
ACTIVATIONS_UNKNOWN_GIB = 2.0  # when the shape gives neither hidden size nor vocabulary

# Bits per quantized body parameter, group scales included.
BODY_BITS: dict[str, float] = {"fp16": 16.0, "bf16": 16.0, "fp8": 8.0, "int8": 8.125, "int4": 4.156}
# Without the vocabulary and hidden size: bits per parameter over the whole model, on the safe
# side for a model whose embeddings are a tenth of its parameters.
EFFECTIVE_BITS: dict[str, float] = {
    "fp16": 16.0,
    "bf16": 16.0,
    "fp8": 8.9,
    "int8": 9.0,
    "int4": 5.4,
}


def _shape(
    params_b: float,
    layers: int,
    kv_heads: int,
    head_dim: int,
    hidden: int,
    vocab: int,
    tied: bool = False,
) -> ModelShape:
    return ModelShape(
        parameters_b=params_b, layers=layers, kv_heads=kv_heads, head_dim=head_dim,
        hidden_size=hidden, vocab_size=vocab, tied_embeddings=tied,
    )  # fmt: skip


# Keys are model names with everything but letters and digits removed, lower-cased; the longest
# key contained in the normalized served-model name wins. Shapes from each model's config.json.
PRESETS: dict[str, ModelShape] = {
    "llama38b": _shape(8.03, 32, 8, 128, 4096, 128256),
    "llama318b": _shape(8.03, 32, 8, 128, 4096, 128256),
    "llama370b": _shape(70.6, 80, 8, 128, 8192, 128256),
    "llama3170b": _shape(70.6, 80, 8, 128, 8192, 128256),
    "llama3370b": _shape(70.6, 80, 8, 128, 8192, 128256),
    "llama31405b": _shape(405.9, 126, 8, 128, 16384, 128256),
    "llama321b": _shape(1.24, 16, 8, 64, 2048, 128256, tied=True),
    "llama323b": _shape(3.21, 28, 8, 128, 3072, 128256, tied=True),
    "mistral7b": _shape(7.25, 32, 8, 128, 4096, 32768),
    "mixtral8x7b": _shape(46.7, 32, 8, 128, 4096, 32000),
    "mixtral8x22b": _shape(141.0, 56, 8, 128, 6144, 32768),
    "qwen257b": _shape(7.62, 28, 4, 128, 3584, 152064),
    "qwen2514b": _shape(14.8, 48, 8, 128, 5120, 152064),
    "qwen2532b": _shape(32.8, 64, 8, 128, 5120, 152064),
    "qwen2572b": _shape(72.7, 80, 8, 128, 8192, 152064),
    "gemma29b": _shape(9.24, 42, 8, 256, 3584, 256000, tied=True),
    "gemma227b": _shape(27.2, 46, 16, 128, 4608, 256000, tied=True),
}


def preset_for(model: str) -> ModelShape | None:
    key = re.sub(r"[^a-z0-9]", "", model.lower())
    matches = [k for k in PRESETS if k in key]
    return PRESETS[max(matches, key=len)] if matches else None


@dataclass(frozen=True)
class MemoryEstimate:
    tier: str
    weights_gib: float  # the whole model's weights, all GPUs together
    weights_per_gpu_gib: float
    kv_cache_per_gpu_gib: float
    overhead_gib: float  # runtime: context, CUDA graphs, activations
    budget_per_gpu_gib: float
    max_model_len: int

    @property
    def needed_per_gpu_gib(self) -> float:
        return self.weights_per_gpu_gib + self.kv_cache_per_gpu_gib + self.overhead_gib

    @property
    def fits(self) -> bool:
        return self.needed_per_gpu_gib <= self.budget_per_gpu_gib

    def explain(self) -> str:
        verdict = "fits in" if self.fits else "does not fit in"
        return (
            f"tier {self.tier} needs {self.needed_per_gpu_gib:.1f} GiB per GPU "
            f"(weights {self.weights_per_gpu_gib:.1f} + KV cache {self.kv_cache_per_gpu_gib:.1f} "
            f"at maxModelLen {self.max_model_len} + runtime {self.overhead_gib:.1f}), "
            f"which {verdict} the {self.budget_per_gpu_gib:.1f} GiB vLLM may use per GPU"
        )


def weights_bytes(precision: str, shape: ModelShape) -> float:
    params = shape.parameters_b * 1e9
    if shape.vocab_size is None or shape.hidden_size is None:
        return params * EFFECTIVE_BITS[precision] / 8
    embedding = shape.vocab_size * shape.hidden_size * (1 if shape.tied_embeddings else 2)
    return (params - embedding) * BODY_BITS[precision] / 8 + embedding * 2


def runtime_gib(shape: ModelShape) -> float:
    if shape.vocab_size is None or shape.hidden_size is None:
        activations = ACTIVATIONS_UNKNOWN_GIB
    else:
        hidden = ACTIVATION_TOKENS * shape.hidden_size * 2 * ACTIVATION_TENSORS
        logits = LOGIT_SEQS * shape.vocab_size * 4
        activations = (hidden + logits) / GIB
    return CONTEXT_GIB + CUDA_GRAPHS_GIB + activations


def estimate(tier: Tier, shape: ModelShape) -> MemoryEstimate:
    s = tier.serving
    tp = s.tensor_parallel_size
    weights = weights_bytes(tier.precision, shape) / GIB
    kv_heads_per_gpu = max(1.0, shape.kv_heads / tp)  # replicated, never fewer than one
    kv_per_token = 2 * shape.layers * kv_heads_per_gpu * shape.head_dim * KV_BYTES
    return MemoryEstimate(
        tier=tier.name,
        weights_gib=weights,
        weights_per_gpu_gib=weights / tp,
        kv_cache_per_gpu_gib=kv_per_token * s.max_model_len / GIB,
        overhead_gib=runtime_gib(shape),
        budget_per_gpu_gib=s.gpu.memory_gi_b * s.gpu_memory_utilization,
        max_model_len=s.max_model_len,
    )
