"""GPU memory pre-flight: will a tier's weights and KV cache fit the memory vLLM may use?

Per GPU, a tier needs
    weights   = parameters x effective bits / 8 / tensorParallelSize
    KV cache  = 2 (K and V) x layers x kvHeads x headDim x 2 bytes x maxModelLen / tensorParallelSize
                (one full-length sequence, the least vLLM must hold; the KV cache is fp16/bf16)
    overhead  = RUNTIME_OVERHEAD_GIB (CUDA context, activations, CUDA graphs)
and has `gpu.memoryGiB x gpuMemoryUtilization`. Quantized formats keep some layers (embeddings,
the LM head) in 16 bits and store scales per group, so their effective bits per parameter are a
little above the nominal ones. These are estimates, deliberately on the safe side: the point is to
refuse a tier that cannot possibly load, with the numbers, before it burns GPU-hours crash-looping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from quantrollout.api.resolve import Tier
from quantrollout.api.spec import ModelShape

GIB = 1024**3
RUNTIME_OVERHEAD_GIB = 2.0
KV_BYTES = 2  # fp16/bf16 KV cache (vLLM's default kv-cache-dtype "auto")

# Effective bits per parameter, scales and unquantized layers included.
EFFECTIVE_BITS: dict[str, float] = {
    "fp16": 16.0,
    "bf16": 16.0,
    "fp8": 8.3,
    "int8": 8.5,
    "int4": 4.6,
}


def _shape(params_b: float, layers: int, kv_heads: int, head_dim: int) -> ModelShape:
    return ModelShape(parameters_b=params_b, layers=layers, kv_heads=kv_heads, head_dim=head_dim)


# Keys are model names with everything but letters and digits removed, lower-cased; the longest
# key contained in the normalized served-model name wins.
PRESETS: dict[str, ModelShape] = {
    "llama38b": _shape(8.03, 32, 8, 128),
    "llama318b": _shape(8.03, 32, 8, 128),
    "llama370b": _shape(70.6, 80, 8, 128),
    "llama3170b": _shape(70.6, 80, 8, 128),
    "llama3370b": _shape(70.6, 80, 8, 128),
    "llama31405b": _shape(405.9, 126, 8, 128),
    "llama321b": _shape(1.24, 16, 8, 64),
    "llama323b": _shape(3.21, 28, 8, 128),
    "mistral7b": _shape(7.25, 32, 8, 128),
    "mixtral8x7b": _shape(46.7, 32, 8, 128),
    "mixtral8x22b": _shape(141.0, 56, 8, 128),
    "qwen257b": _shape(7.62, 28, 4, 128),
    "qwen2514b": _shape(14.8, 48, 8, 128),
    "qwen2532b": _shape(32.8, 64, 8, 128),
    "qwen2572b": _shape(72.7, 80, 8, 128),
    "gemma29b": _shape(9.24, 42, 8, 256),
    "gemma227b": _shape(27.2, 46, 16, 128),
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
    overhead_gib: float
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
            f"at maxModelLen {self.max_model_len} + overhead {self.overhead_gib:.1f}), "
            f"which {verdict} the {self.budget_per_gpu_gib:.1f} GiB vLLM may use per GPU"
        )


def estimate(tier: Tier, shape: ModelShape) -> MemoryEstimate:
    s = tier.serving
    tp = s.tensor_parallel_size
    weights = shape.parameters_b * 1e9 * EFFECTIVE_BITS[tier.precision] / 8 / GIB
    kv_per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * KV_BYTES
    return MemoryEstimate(
        tier=tier.name,
        weights_gib=weights,
        weights_per_gpu_gib=weights / tp,
        kv_cache_per_gpu_gib=kv_per_token * s.max_model_len / tp / GIB,
        overhead_gib=RUNTIME_OVERHEAD_GIB,
        budget_per_gpu_gib=s.gpu.memory_gi_b * s.gpu_memory_utilization,
        max_model_len=s.max_model_len,
    )
