"""Builders and the plan: golden files for the example's objects, vLLM args per format, the GPU
memory pre-flight, and drift detection. Set UPDATE_GOLDEN=1 to rewrite the golden files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantrollout.api.resolve import tiers
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.manifests.drift import drifted
from quantrollout.manifests.gpu_memory import estimate, preset_for, weights_bytes
from quantrollout.manifests.plan import plan
from quantrollout.manifests.vllm import build_deployment, vllm_args

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = yaml.safe_load((REPO / "examples" / "llama3-8b-awq.yaml").read_text())


def spec_with(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(yaml.safe_dump(EXAMPLE["spec"]))
    for path, value in changes.items():
        node = raw
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return raw


@pytest.mark.parametrize("index", [0, 1])
def test_example_objects_match_golden_files(index: int) -> None:
    p = plan("llama3-8b", "llm", EXAMPLE["spec"])
    assert p.invalid is None
    tier_plan = p.tiers[index]
    for obj in tier_plan.objects:
        path = GOLDEN / f"{obj['metadata']['name']}.{obj['kind'].lower()}.yaml"
        text = yaml.safe_dump(obj, sort_keys=False)
        if os.environ.get("UPDATE_GOLDEN"):
            path.write_text(text)
        assert text == path.read_text(), f"{path.name} differs (UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize(
    ("fmt", "precision", "artifact", "quantization"),
    [
        # AWQ and GPTQ: no flag, so vLLM reads the checkpoint and picks its Marlin kernels.
        ("awq", "int4", "s3://m/awq", None),
        ("gptq", "int8", "s3://m/gptq", None),
        ("fp8", "fp8", "s3://m/fp8", None),  # fp8 or compressed-tensors inside: vLLM reads which
        ("compressed-tensors", "int8", "s3://m/w8a8", "compressed-tensors"),
    ],
)
@pytest.mark.parametrize(("baseline", "dtype"), [("fp16", "float16"), ("bf16", "bfloat16")])
def test_vllm_args_per_format(
    fmt: str, precision: str, artifact: str, quantization: str | None, baseline: str, dtype: str
) -> None:
    spec = QuantizedModelSpec.model_validate(
        spec_with(
            target__format=fmt,
            target__precision=precision,
            target__artifact=artifact,
            baseline__precision=baseline,
        )
    )
    _, target = tiers(spec)
    args = vllm_args(spec.model, target, spec.baseline.precision)
    given = args[args.index("--quantization") + 1] if "--quantization" in args else None
    assert given == quantization
    assert args[args.index("--dtype") + 1] == dtype  # the baseline's, for every format


def test_bf16_baseline_runs_in_bfloat16_and_has_no_quantization() -> None:
    spec = QuantizedModelSpec.model_validate(
        spec_with(baseline__precision="bf16", target__format="fp8", target__precision="fp8")
    )
    baseline, target = tiers(spec)
    base_args = vllm_args(spec.model, baseline, "bf16")
    assert "--quantization" not in base_args
    assert base_args[base_args.index("--dtype") + 1] == "bfloat16"
    target_args = vllm_args(spec.model, target, "bf16")
    assert target_args[target_args.index("--dtype") + 1] == "bfloat16"


@pytest.mark.parametrize(
    ("artifact", "model_arg", "volumes"),
    [
        ("s3://bucket/llama", "s3://bucket/llama", 0),
        ("gs://bucket/llama", "gs://bucket/llama", 0),
        ("hf://meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct", 0),
        ("pvc://weights/llama3/awq", "/models/weights/llama3/awq", 1),
    ],
)
def test_artifact_sources(artifact: str, model_arg: str, volumes: int) -> None:
    spec = QuantizedModelSpec.model_validate(spec_with(target__artifact=artifact))
    _, target = tiers(spec)
    dep = build_deployment(
        name="m", namespace="n", served_model="x", tier=target, baseline_precision="fp16"
    )
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["vllm", "serve"]
    assert container["args"][0] == model_arg  # `vllm serve MODEL`: positional
    assert "--model" not in container["args"]
    assert len(dep["spec"]["template"]["spec"]["volumes"]) == 3 + volumes


def test_autoscaling_leaves_replicas_alone() -> None:
    spec = QuantizedModelSpec.model_validate(
        spec_with(serving__autoscaling={"minReplicas": 1, "maxReplicas": 4})
    )
    _, target = tiers(spec)
    dep = build_deployment(
        name="m", namespace="n", served_model="x", tier=target, baseline_precision="fp16"
    )
    assert "replicas" not in dep["spec"]


def test_readiness_deadline_sets_the_startup_probe_and_progress_deadline() -> None:
    spec = QuantizedModelSpec.model_validate(spec_with(serving__readinessDeadline="20m"))
    _, target = tiers(spec)
    dep = build_deployment(
        name="m", namespace="n", served_model="x", tier=target, baseline_precision="fp16"
    )
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert (
        container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
        == 1200
    )
    assert dep["spec"]["progressDeadlineSeconds"] == 1200


def test_children_never_copy_the_models_labels() -> None:
    p = plan("llama3-8b", "llm", EXAMPLE["spec"])
    for tier_plan in p.tiers:
        for obj in tier_plan.objects:
            assert "argocd.argoproj.io/instance" not in obj["metadata"]["labels"]
            assert all(
                k.startswith(("app.kubernetes.io/", "quantrollout.io/"))
                for k in obj["metadata"]["labels"]
            )


def test_presets_and_memory_estimates() -> None:
    shape = preset_for("meta-llama/Meta-Llama-3-8B-Instruct")
    assert shape is not None
    assert shape.parameters_b == pytest.approx(8.03)
    assert preset_for("meta-llama/Llama-3.1-70B-Instruct") == preset_for("llama-3-70b")
    assert preset_for("acme/secret-model") is None
    baseline, target = tiers(QuantizedModelSpec.model_validate(EXAMPLE["spec"]))
    b, t = estimate(baseline, shape), estimate(target, shape)
    assert b.weights_gib == pytest.approx(8.03e9 * 2 / 1024**3)
    assert t.weights_gib < b.weights_gib / 2.5
    assert b.fits
    assert t.fits
    assert b.budget_per_gpu_gib == pytest.approx(72.0)
    # KV cache of one 4096-token sequence: 2 x 32 layers x 8 heads x 128 dims x 2 bytes x 4096
    assert b.kv_cache_per_gpu_gib == pytest.approx(0.5)


# What vLLM reports loading ("Loading model weights took X GB", in GiB), as published; see
# docs/vllm.md for the sources.
PUBLISHED_WEIGHTS_GIB = [
    ("meta-llama/Meta-Llama-3-8B-Instruct", "fp16", 1, 14.9595),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "int4", 1, 5.3440),  # AWQ
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "int4", 1, 5.3767),  # GPTQ 4-bit
    ("meta-llama/Meta-Llama-3-8B-Instruct", "fp8", 1, 8.4596),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "fp8", 1, 8.4939),
]


@pytest.mark.parametrize(("model", "precision", "tp", "published"), PUBLISHED_WEIGHTS_GIB)
def test_weight_estimates_match_what_vllm_reports(
    model: str, precision: str, tp: int, published: float
) -> None:
    shape = preset_for(model)
    assert shape is not None
    assert weights_bytes(precision, shape) / tp / 1024**3 == pytest.approx(published, rel=0.03)


def test_quantized_weights_keep_16_bit_embeddings() -> None:
    """The LM head and embeddings of Llama 3 8B are 2 x 128256 x 4096 parameters in 16 bits,
    about 2 GiB of its 5.3 GiB in INT4: a flat bits-per-parameter would say 4.2."""
    shape = preset_for("llama-3-8b")
    assert shape is not None
    flat = shape.parameters_b * 1e9 * 4.156 / 8 / 1024**3
    assert weights_bytes("int4", shape) / 1024**3 - flat > 0.9


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    """TP 16 over 8 KV heads: each GPU still holds one head per layer, not half of one."""
    raw = spec_with(
        model="meta-llama/Llama-3.1-70B-Instruct",
        serving__gpu={"count": 16, "memoryGiB": 80},
        serving__tensorParallelSize=16,
    )
    baseline, _ = tiers(QuantizedModelSpec.model_validate(raw))
    shape = preset_for("llama-3-70b")
    assert shape is not None
    est = estimate(baseline, shape)
    one_head = 2 * 80 * 1 * 128 * 2 * 4096 / 1024**3
    assert est.kv_cache_per_gpu_gib == pytest.approx(one_head)


def test_runtime_counts_cuda_graphs_and_activations() -> None:
    shape = preset_for("llama-3-8b")
    assert shape is not None
    baseline, _ = tiers(QuantizedModelSpec.model_validate(EXAMPLE["spec"]))
    assert estimate(baseline, shape).overhead_gib > 3  # was a flat 2 GiB


def test_tensor_parallelism_divides_the_per_gpu_need() -> None:
    raw = spec_with(serving__gpu={"count": 4, "memoryGiB": 80}, serving__tensorParallelSize=4)
    baseline, _ = tiers(QuantizedModelSpec.model_validate(raw))
    shape = preset_for("llama-3-70b")
    assert shape is not None
    est = estimate(baseline, shape)
    assert est.weights_per_gpu_gib == pytest.approx(est.weights_gib / 4)
    assert est.fits


def test_a_70b_fp16_baseline_on_one_gpu_does_not_fit() -> None:
    p = plan("big", "llm", spec_with(model="meta-llama/Llama-3.1-70B-Instruct"))
    baseline, target = p.tiers
    assert baseline.problem is not None
    assert baseline.problem.reason == "InsufficientGPUMemory"
    assert baseline.objects == ()
    assert target.problem is None
    assert p.gpu_saving is not None
    assert p.gpu_saving.weight_memory_percent > 70


def test_unknown_model_skips_the_preflight_with_a_note() -> None:
    p = plan("m", "llm", spec_with(model="acme/secret-model"))
    assert all(t.estimate is None and t.deployable for t in p.tiers)
    assert p.notes == (
        "GPU memory pre-flight skipped: no preset matches model 'acme/secret-model'; set spec.modelShape",
    )


def test_merged_tier_settings_are_checked() -> None:
    p = plan("m", "llm", spec_with(target__serving={"tensorParallelSize": 2}))
    assert p.invalid is not None
    assert p.invalid.reason == "InvalidSpec"
    assert p.invalid.message.startswith("spec.target.serving: gpu.count 1")
    assert p.tiers == ()


def test_unparsable_spec_names_the_field() -> None:
    p = plan("m", "llm", spec_with(serving__gpuMemoryUtilization=3))
    assert p.invalid is not None
    assert p.invalid.message.startswith("spec.serving.gpuMemoryUtilization: ")


def test_drift() -> None:
    desired = {"a": 1, "b": {"c": [1, {"d": "x"}]}}
    assert not drifted(desired, {"a": 1, "b": {"c": [1, {"d": "x", "e": 2}], "f": 3}, "g": 0})
    assert drifted(desired, {"a": 2, "b": {"c": [1, {"d": "x"}]}})
    assert drifted(desired, {"a": 1, "b": {"c": [1]}})
    assert drifted(desired, {"a": 1})
    assert drifted(desired, {"a": 1, "b": {"c": [1, {"d": "y"}]}})


def test_gradual_weights_must_exceed_the_ab_weight() -> None:
    stages = [
        {"name": "ab", "weight": 30},
        {"name": "gradual", "weights": [20, 50]},
        {"name": "full"},
    ]
    p = plan("m", "llm", spec_with(rollout__stages=stages))
    assert p.invalid is not None
    assert p.invalid.message == (
        "spec.rollout.stages: the gradual weights must all exceed the ab weight (30%), but the first is 20%"
    )


@pytest.mark.parametrize(
    "model", ["google/gemma-2-9b-it", "google/gemma-3-27b-it", "THUDM/glm-4-9b-chat"]
)
def test_float16_is_refused_for_models_vllm_refuses_it_for(model: str) -> None:
    p = plan("m", "llm", spec_with(model=model))
    assert p.invalid is not None
    assert p.invalid.reason == "InvalidSpec"
    assert p.invalid.message.startswith("spec.baseline.precision: vLLM refuses float16")
    assert plan("m", "llm", spec_with(model=model, baseline__precision="bf16")).invalid is None


def test_credentials_are_rendered_by_reference_only() -> None:
    raw = spec_with(
        serving__env=[
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
        ],
        target__serving={
            "serviceAccountName": "reader",
            "envFrom": [{"secretRef": {"name": "s3-creds"}}],
        },
    )
    baseline, target = tiers(QuantizedModelSpec.model_validate(raw))
    base = build_deployment(
        name="m", namespace="n", served_model="x", tier=baseline, baseline_precision="fp16"
    )["spec"]["template"]["spec"]
    tgt = build_deployment(
        name="m", namespace="n", served_model="x", tier=target, baseline_precision="fp16"
    )["spec"]["template"]["spec"]
    hf = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert hf in base["containers"][0]["env"]
    assert hf in tgt["containers"][0]["env"]  # the tier sets envFrom only: env is inherited
    assert "serviceAccountName" not in base
    assert tgt["serviceAccountName"] == "reader"
    # the tier's envFrom replaces spec.serving's (the example's optional store credentials)
    assert tgt["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert base["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "model-store-credentials", "optional": True}}
    ]


@pytest.mark.parametrize(
    "env",
    [
        {"name": "HF_TOKEN", "value": "hf_plaintext"},  # a value in the spec: refused
        {"name": "HOME", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ],
)
def test_env_takes_secret_references_only(env: dict[str, Any]) -> None:
    p = plan("m", "llm", spec_with(serving__env=[env]))
    assert p.invalid is not None
    assert p.invalid.message.startswith("spec.serving.env.0")


def test_pods_request_cpu_and_memory_and_probe_with_time_to_answer() -> None:
    _, target = tiers(QuantizedModelSpec.model_validate(spec_with(target__serving={"cpu": "8"})))
    c = build_deployment(
        name="m", namespace="n", served_model="x", tier=target, baseline_precision="fp16"
    )["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["cpu"] == "8"
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"] == "32Gi"
    assert "cpu" not in c["resources"]["limits"]
    assert c["livenessProbe"]["timeoutSeconds"] >= 5
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["USER"] == "vllm"  # uid 1000 has no passwd entry; getpass needs USER
    assert all(
        env[k].startswith(env["HOME"]) for k in env if k.endswith(("_CACHE_DIR", "_HOME", "_ROOT"))
    )


@pytest.mark.parametrize("fmt", ["bitsandbytes", "gguf"])
def test_formats_no_supported_vllm_serves_are_invalid_even_if_admitted_earlier(fmt: str) -> None:
    p = plan("m", "llm", spec_with(target__format=fmt, target__artifact="hf://org/m"))
    assert p.invalid is not None
    assert p.invalid.message.startswith(f"spec.target.format: {fmt} cannot be served")


def test_gs_streaming_needs_an_image_that_has_it() -> None:
    old = {"image": "vllm/vllm-openai:v0.11.0"}
    p = plan("m", "llm", spec_with(target__artifact="gs://b/m", target__serving=old))
    assert p.invalid is not None
    assert p.invalid.message.startswith("spec.target.artifact: gs:// streaming is not in the")
    assert "spec.target.serving.image" in p.invalid.message
    assert plan("m", "llm", spec_with(target__artifact="gs://b/m")).invalid is None  # default
    assert plan("m", "llm", spec_with(target__serving=old)).invalid is None  # s3:// is fine
