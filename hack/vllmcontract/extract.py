"""The rest of the contract, read from a vLLM wheel's source: HTTP routes, Prometheus series and
quantization methods. See cli.py for the flags and hack/vllm-contract.py for the file's shape."""

from __future__ import annotations

import ast
import math
from typing import Any

from vllmcontract.source import Def, Wheel, find_method

# Modules under vllm/entrypoints that are not the OpenAI-compatible server `vllm serve` runs:
# the legacy demo server, the data-parallel supervisor (its own process) and the CLI's preloader.
_NOT_THE_SERVER = (
    "vllm.entrypoints.api_server",
    "vllm.entrypoints.launchers.dp_supervisor",
    "vllm.entrypoints.cli.",
)
_HTTP_METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}


def routes(wheel: Wheel) -> list[dict[str, Any]]:
    """Every path the API server declares, with its methods. Routes a flag or the model's tasks
    switch on (dev mode, pooling, audio) are included: the contract lists what vLLM can serve."""
    found: dict[str, set[str]] = {}
    for module in wheel.modules_under("vllm.entrypoints"):
        if module.startswith(_NOT_THE_SERVER) or module in _NOT_THE_SERVER:
            continue
        for node in ast.walk(wheel.module(module)):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            attr = node.func.attr
            path = node.args[0] if node.args else None
            if not (isinstance(path, ast.Constant) and isinstance(path.value, str)):
                continue
            owner = ast.unparse(node.func.value)
            if attr in _HTTP_METHODS and (owner.endswith("router") or owner == "app"):
                found.setdefault(path.value, set()).add(attr.upper())
            elif attr == "add_api_route" or attr == "api_route":
                methods = next((k.value for k in node.keywords if k.arg == "methods"), None)
                values = ast.literal_eval(methods) if methods is not None else ["GET"]
                found.setdefault(path.value, set()).update(m.upper() for m in values)
        for node in ast.walk(wheel.module(module)):  # Mount("/metrics", make_asgi_app(...))
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("Mount")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.setdefault(str(node.args[0].value), set()).add("GET")
    return [{"path": p, "methods": sorted(m)} for p, m in sorted(found.items())]


# --- Prometheus series -----------------------------------------------------------------------------

_METRIC_CTORS = {
    "_gauge_cls": "gauge",
    "_counter_cls": "counter",
    "_histogram_cls": "histogram",
    "Gauge": "gauge",
    "Counter": "counter",
    "Histogram": "histogram",
}


def _bucket_builder(wheel: Wheel, module: str, call: ast.Call) -> Any:
    """Buckets built by a call: `build_1_2_5_buckets(max_model_len)` (they depend on a runtime
    value, so kept as mantissas and the bound's name for a consumer to expand) or, in later
    releases, `histogram_buckets("family", ...)` (a table of tuples, or the 1-2-5 builder)."""
    name = ast.unparse(call.func)
    found = wheel.resolve(module, name)
    if found is None or found.kind != "function":
        return None
    assert isinstance(found.node, ast.FunctionDef)
    family = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else None
    if family is None:
        for node in ast.walk(found.node):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("build_buckets"):
                mantissas = ast.literal_eval(node.args[0])
                return {"mantissas": mantissas, "max_value": ast.unparse(call.args[0])}
        return None
    for node in ast.walk(found.node):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.comparators[0], ast.Constant)
            and node.test.comparators[0].value == family
        ):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Call):
                    arg = ret.value.args[0] if ret.value.args else None
                    inner = ast.Call(
                        func=ret.value.func, args=[ast.Name("max_model_len")], keywords=[]
                    )
                    built = _bucket_builder(wheel, found.module, inner)
                    if built is not None and arg is not None:
                        return built
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            table = wheel.resolve(found.module, node.value.id)
            if table is None or not isinstance(table.node, ast.Dict):
                continue
            for k, v in zip(table.node.keys, table.node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == family:
                    value = wheel.resolve(table.module, v.id) if isinstance(v, ast.Name) else None
                    expr = value.node if value is not None else v
                    assert isinstance(expr, ast.expr)
                    return list(ast.literal_eval(expr))
    return None


def _eval_list(node: ast.expr, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _eval_list(node.left, env), _eval_list(node.right, env)
        if isinstance(left, list) and isinstance(right, list):
            return left + right
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "list" and node.args:
        return _eval_list(node.args[0], env)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


# Where the series of a `vllm serve` of a text model are declared: the V1 engine (its stat logger,
# spec decode, KV offload, perf counters) and, in later releases, the renderer. Left out: the V0
# engine's vllm/engine/metrics.py (0.11 still ships it, unused by the V1 server) and KV-connector
# plugins, which register series only when configured.
_METRIC_PACKAGES = ("vllm.v1", "vllm.renderers")


def _conditional_calls(fn: ast.FunctionDef) -> set[int]:
    """Calls in `fn` that only run under a condition: inside an `if`, or after an early
    `if ...: return` (how the spec-decode and LoRA series are switched off)."""
    out: set[int] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.If | ast.IfExp):
            out |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Call)}
    returned = False
    for stmt in fn.body:
        if returned:
            out |= {id(n) for n in ast.walk(stmt) if isinstance(n, ast.Call)}
        if isinstance(stmt, ast.If) and any(isinstance(n, ast.Return) for n in ast.walk(stmt)):
            returned = True
    return out


def metrics(wheel: Wheel) -> list[dict[str, Any]]:
    """Series the engine's Prometheus logger registers: name, declaring module, whether it is
    only registered under a condition (a flag, a feature), type, label names and histogram
    buckets. Counters are listed under their declared name; prometheus_client exports them with
    `_total` appended."""
    out: dict[str, dict[str, Any]] = {}
    modules = [m for prefix in _METRIC_PACKAGES for m in wheel.modules_under(prefix)]
    for module in modules:
        tree = wheel.module(module)
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            env: dict[str, Any] = {}
            calls: dict[str, ast.Call] = {}
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    value = _eval_list(node.value, env)
                    if isinstance(value, list):
                        env[node.targets[0].id] = value
                    elif isinstance(node.value, ast.Call):
                        calls[node.targets[0].id] = node.value
            conditional = _conditional_calls(fn)
            for node in ast.walk(fn):
                if not isinstance(node, ast.Call):
                    continue
                ctor = ast.unparse(node.func).split(".")[-1]
                if ctor not in _METRIC_CTORS:
                    continue
                kw = {k.arg: k.value for k in node.keywords if k.arg}
                name_node = kw.get("name") or (node.args[0] if node.args else None)
                if not (isinstance(name_node, ast.Constant) and isinstance(name_node.value, str)):
                    continue
                if not name_node.value.startswith("vllm:"):
                    continue
                labels_node = kw.get("labelnames")
                labels = _eval_list(labels_node, env) if labels_node is not None else []
                entry: dict[str, Any] = {
                    "name": name_node.value,
                    "module": module,
                    "conditional": id(node) in conditional,
                    "type": _METRIC_CTORS[ctor],
                    "labels": sorted(labels)
                    if isinstance(labels, list)
                    else {"expr": ast.unparse(labels_node) if labels_node else ""},
                }
                if entry["type"] == "histogram":
                    b = kw.get("buckets")
                    buckets: Any = None
                    if b is not None:
                        buckets = _eval_list(b, env)
                        if buckets is None and isinstance(b, ast.Name) and b.id in calls:
                            buckets = _bucket_builder(wheel, module, calls[b.id])
                        if buckets is None and isinstance(b, ast.Call):
                            buckets = _bucket_builder(wheel, module, b)
                        if buckets is None:
                            buckets = {"expr": ast.unparse(b)}
                    entry["buckets"] = buckets
                if entry["name"] in out and out[entry["name"]] != entry:
                    raise SystemExit(f"{entry['name']} is declared twice, differently")
                out[entry["name"]] = entry
    return [out[n] for n in sorted(out)]


def expand_buckets(buckets: Any, max_model_len: int) -> list[float]:
    """The bucket bounds a histogram has for a given max_model_len (build_1_2_5_buckets)."""
    if isinstance(buckets, list):
        return [float(b) for b in buckets]
    mantissas: list[int] = buckets["mantissas"]
    out: list[float] = []
    exponent = 0
    while True:
        for m in mantissas:
            value = m * 10**exponent
            if value > max_model_len:
                return out
            out.append(float(value))
        exponent += 1
        if exponent > math.log10(max(max_model_len, 1)) + 2:
            return out


# --- quantization ----------------------------------------------------------------------------------


def _literal_strings(wheel: Wheel, module: str, name: str) -> list[str]:
    d = wheel.resolve(module, name)
    if d is None or not isinstance(d.node, ast.Subscript):
        return []
    sl = d.node.slice
    elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def _get_name(wheel: Wheel, d: Def) -> str | None:
    found = find_method(wheel, d, "get_name")
    if found is None:
        return None
    for node in ast.walk(found[1]):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
            return str(node.value.value)
    return None


def _compared_strings(fn: ast.AST, var: str) -> tuple[set[str], bool]:
    """String constants `var` is compared with (==, !=, in), and whether `var is None` appears."""
    values: set[str] = set()
    none = False
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare) and ast.unparse(node.left) == var:
            for op, right in zip(node.ops, node.comparators, strict=True):
                if (
                    isinstance(op, ast.Is)
                    and isinstance(right, ast.Constant)
                    and right.value is None
                ):
                    none = True
                elif isinstance(right, ast.Constant) and isinstance(right.value, str):
                    values.add(right.value)
                elif isinstance(op, ast.In | ast.NotIn) and isinstance(
                    right, ast.Tuple | ast.List | ast.Set
                ):
                    values |= {
                        e.value
                        for e in right.elts
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    }
    return values, none


def quantization(wheel: Wheel) -> dict[str, Any]:
    qmod = "vllm.model_executor.layers.quantization"
    methods = _literal_strings(wheel, qmod, "QuantizationMethods")
    overrides: dict[str, str] = {}
    keeps: dict[str, list[str | None]] = {}
    for module in wheel.modules_under(qmod):
        for node in wheel.module(module).body:
            if not isinstance(node, ast.ClassDef):
                continue
            d = Def(module, "class", node)
            found = find_method(wheel, d, "override_quantization_method")
            if found is None or found[0].node is not node:
                continue
            name = _get_name(wheel, d)
            fn = found[1]
            # The checkpoint's quant_method the override applies to: compared in the method itself
            # or in the compatibility check it calls (is_awq_marlin_compatible & co.).
            scope: list[ast.AST] = [fn]
            for call in ast.walk(fn):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
                    helper = find_method(wheel, d, call.func.attr)
                    if helper is not None and call.func.attr.startswith("is_"):
                        scope.append(helper[1])
            checkpoint: set[str] = set()
            for s in scope:
                checkpoint |= _compared_strings(s, "quant_method")[0]
            user, none_ok = _compared_strings(fn, "user_quant")
            if name is None or len(checkpoint) != 1:
                continue
            (source,) = checkpoint
            if source not in ("awq", "gptq") or source == name:
                continue
            overrides[source] = name
            allowed: list[str | None] = [None] if none_ok else []
            keeps[source] = [*allowed, *sorted(user)]
    online: list[str] = []
    for mod, var in (("vllm.config.quantization", "_ONLINE_SHORTHANDS"),):
        shorthands = wheel.resolve(mod, var) if wheel.has_module(mod) else None
        if shorthands is not None and isinstance(shorthands.node, ast.Dict):
            keys = shorthands.node.keys
            online = sorted(str(k.value) for k in keys if isinstance(k, ast.Constant))
    if not online:  # older releases: arg_utils.is_online_quantization's list
        check = wheel.resolve("vllm.engine.arg_utils", "is_online_quantization")
        if check is not None and check.node is not None:
            for item in ast.walk(check.node):
                if isinstance(item, ast.List):
                    online = sorted(ast.literal_eval(item))
    return {
        "methods": methods,
        "marlin_overrides": dict(sorted(overrides.items())),
        "marlin_override_user_quant": dict(sorted(keeps.items())),
        "online": online,
    }


def load_formats(wheel: Wheel) -> list[str]:
    """--load-format values vLLM registers (its type is `str | LoadFormats`, so argparse itself
    accepts any string; the loader refuses the rest)."""
    for mod in ("vllm.model_executor.model_loader", "vllm.config.load"):
        if wheel.has_module(mod):
            values = _literal_strings(wheel, mod, "LoadFormats")
            if values:
                return sorted(values)
    return []


def runai_schemes(wheel: Wheel) -> list[str]:
    """URI schemes the Run:ai streamer loader takes (s3://, and gs:// from some release on)."""
    found: set[str] = set()
    for module in wheel.modules_under("vllm.transformers_utils"):
        if "runai" not in module and "s3" not in module and "utils" not in module:
            continue
        for node in ast.walk(wheel.module(module)):
            if (
                isinstance(node, ast.Assign)
                and "SUPPORTED_SCHEMES" in ast.unparse(node.targets[0]).upper()
            ):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                found |= {str(v).removesuffix("://") for v in value}
    return sorted(found)


def float16_refused(wheel: Wheel) -> list[str]:
    """Model types vLLM refuses to run in float16 (vllm/config/model.py)."""
    for module in ("vllm.config.model", "vllm.config"):
        d = (
            wheel.resolve(module, "_FLOAT16_NOT_SUPPORTED_MODELS")
            if wheel.has_module(module)
            else None
        )
        if d is not None and isinstance(d.node, ast.Dict):
            return sorted(str(k.value) for k in d.node.keys if isinstance(k, ast.Constant))
    raise SystemExit("_FLOAT16_NOT_SUPPORTED_MODELS not found")


def env_vars(wheel: Wheel) -> list[str]:
    """The VLLM_* environment variables vllm/envs.py reads (its `environment_variables` table)."""
    d = wheel.resolve("vllm.envs", "environment_variables")
    if d is None or not isinstance(d.node, ast.Dict):
        raise SystemExit("vllm.envs.environment_variables not found")
    return sorted(str(k.value) for k in d.node.keys if isinstance(k, ast.Constant))


def finish_reasons(wheel: Wheel) -> list[str]:
    """The `finished_reason` label values (vllm/v1/engine FINISH_REASON_STRINGS); the stat
    logger creates a vllm:request_success child for each."""
    d = wheel.resolve("vllm.v1.engine", "FINISH_REASON_STRINGS")
    if d is None or not isinstance(d.node, ast.expr):
        raise SystemExit("FINISH_REASON_STRINGS not found")
    return list(ast.literal_eval(d.node))
