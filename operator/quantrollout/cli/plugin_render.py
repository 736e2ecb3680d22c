"""What `kubectl quantrollout` prints: pure functions from QuantizedModel objects (plain camelCase
dicts, as the API server sends them) to text. No I/O; `plugin.py` fetches and prints.

`render_model` is the detail view of one model (tiers, the stages as a tree with the current step
marked, live and mirror weights, the last analysis rule by rule, rollback reasons, conditions);
`render_table` is the one-line-per-model list; `render_action` and `render_pause` say what a
control asked for.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from quantrollout.analysis.rules import DEFAULT_RULES
from quantrollout.api.durations import format_duration
from quantrollout.api.resolve import all_tiers
from quantrollout.api.spec import QuantizedModelSpec, Rule
from quantrollout.api.status import (
    ClassStatus,
    GPUSaving,
    QuantizedModelStatus,
    RuleResult,
    TierStatus,
)
from quantrollout.api.thresholds import parse_threshold
from quantrollout.defaults import ACTION_ANNOTATION, ACTIONS
from quantrollout.rollout.mixed import policy_tiers
from quantrollout.rollout.steps import Step, steps_for

NONE = "-"

_STATUS_KEYS = frozenset(
    field.alias or name for name, field in QuantizedModelStatus.model_fields.items()
)
# Only its (absent) rollout is read, by steps_for: the default stages.
_NO_ROLLOUT: dict[str, Any] = {"rollout": None}
_DEFAULT_SPEC = QuantizedModelSpec.model_construct(**_NO_ROLLOUT)


# ---------------------------------------------------------------------------------------------
# Reading the object


@dataclass(frozen=True)
class View:
    """One QuantizedModel, read for display; `problems` says what could not be read."""

    namespace: str
    name: str
    model: str
    target: str
    baseline_text: str
    target_text: str
    paused: bool
    spec: QuantizedModelSpec | None
    status: QuantizedModelStatus
    problems: tuple[str, ...] = ()


def read_model(obj: Mapping[str, Any]) -> View:
    """Parses what it can; an unreadable spec or status degrades the view, never fails it."""
    meta = obj.get("metadata") or {}
    raw_spec = obj.get("spec") or {}
    problems: list[str] = []
    spec: QuantizedModelSpec | None
    try:
        spec = QuantizedModelSpec.model_validate(raw_spec)
    except ValidationError as err:
        spec = None
        problems.append(
            f"spec could not be read ({err.error_count()} errors); default stages shown"
        )
    raw_status = {k: v for k, v in (obj.get("status") or {}).items() if k in _STATUS_KEYS}
    try:
        status = QuantizedModelStatus.model_validate(raw_status)
    except ValidationError as err:
        status = QuantizedModelStatus()
        problems.append(f"status could not be read ({err.error_count()} errors)")
    rollout = raw_spec.get("rollout") or {}
    baseline = raw_spec.get("baseline") or {}
    targets = raw_spec.get("targets") or [raw_spec.get("target") or {}]
    return View(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        model=str(raw_spec.get("model") or NONE),
        target=",".join(str(t.get("name") or NONE) for t in targets),
        baseline_text=_tier_text(baseline.get("precision"), None, baseline.get("artifact")),
        target_text="; ".join(
            _tier_text(
                t.get("name"),
                " ".join(str(v) for v in (t.get("precision"), t.get("format")) if v),
                t.get("artifact"),
            )
            for t in targets
        ),
        paused=bool(rollout.get("paused")),
        spec=spec,
        status=status,
        problems=tuple(problems),
    )


def _tier_text(name: object, fmt: object, artifact: object) -> str:
    """`int4-awq (int4 awq, s3://models/llama3-8b-awq)`."""
    details = ", ".join(str(v) for v in (fmt, artifact) if v)
    return f"{name or NONE} ({details})" if details else str(name or NONE)


def steps_of(spec: QuantizedModelSpec | None) -> tuple[Step, ...]:
    """The flattened steps of the spec's stages, or of the default stages."""
    return steps_for(spec if spec is not None else _DEFAULT_SPEC)


def rules_of(spec: QuantizedModelSpec | None) -> Sequence[Rule]:
    analysis = spec.rollout.analysis if spec and spec.rollout else None
    return analysis.rules if analysis and analysis.rules else DEFAULT_RULES


# ---------------------------------------------------------------------------------------------
# Small formatters


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def age(text: str | None, now: datetime.datetime | None) -> str:
    """kubectl-style age of an RFC 3339 time: 45s, 5m, 3h, 2d."""
    at = parse_time(text)
    if at is None or now is None:
        return ""
    seconds = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(text: str | None, now: datetime.datetime | None) -> str:
    """`2026-11-23T10:00:00Z (5m ago)`, or just the time when `now` is unknown."""
    if not text:
        return NONE
    ago = age(text, now)
    return f"{text} ({ago} ago)" if ago else text


def number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return NONE
    return f"{value:.4g}"


def percent(value: int | None) -> str:
    return NONE if value is None else f"{value}%"


def gib(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f} GiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns three spaces apart, like kubectl; no trailing spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "   ".join(cells)).rstrip())
    return lines


# ---------------------------------------------------------------------------------------------
# Sections of the detail view


def tier_lines(tiers: Sequence[TierStatus]) -> list[str]:
    """The tiers; with the capacity plan's columns (replicas wanted, and why) once reported."""
    if not tiers:
        return ["Tiers:      (none reported yet)"]
    capacity = any(t.wanted_replicas is not None for t in tiers)
    rows = []
    for t in tiers:
        row = [t.role, t.name, f"{t.ready_replicas}/{t.replicas}"]
        if capacity:
            row.append(NONE if t.wanted_replicas is None else str(t.wanted_replicas))
        row += [
            str(t.gpus),
            gib(t.estimated_weight_memory_gi_b),
            gib(t.estimated_memory_per_gpu_gi_b),
        ]
        if capacity:
            row.append(t.capacity_reason or NONE)
        row.append("Ready" if t.ready else (t.message or "NotReady"))
        rows.append(row)
    headers = ["ROLE", "TIER", "READY", "GPUS", "WEIGHTS", "MEMORY/GPU", "STATUS"]
    if capacity:
        headers[3:3] = ["WANTED"]
        headers[-1:-1] = ["CAPACITY"]
    lines = ["Tiers:", *table(headers, rows, indent="  ")]
    lines += [f"  {t.name}: {t.capacity_message}" for t in tiers if t.capacity_message]
    return lines


def cheapest_tier(spec: QuantizedModelSpec | None) -> str | None:
    """Mixed precision: the quantized tier that costs least per request (GPUs per replica over
    relative throughput), the one a class is on unless it needed better."""
    if spec is None or not spec.mixed:
        return None
    _, quantized = policy_tiers(all_tiers(spec), {})
    return min(quantized, key=lambda t: (t.cost, t.name)).name if quantized else None


def class_lines(classes: Sequence[ClassStatus], cheapest: str | None) -> list[str]:
    """Mixed precision: each request class, its tier, its share there, shadow's agreement and
    the latest verdict; under a class not on the cheapest tier, why."""
    if not classes:
        return []
    rows = [
        [
            c.class_,
            c.tier,
            percent(c.share),
            NONE if c.agreement is None else f"{c.agreement:.3f}",
            c.verdict or NONE,
        ]
        for c in classes
    ]
    lines = ["Classes:"]
    body = table(["CLASS", "TIER", "SHARE", "AGREEMENT", "VERDICT"], rows, indent="  ")
    lines.append(body[0])
    for c, line in zip(classes, body[1:], strict=True):
        lines.append(line)
        if c.tier != cheapest and c.reason:
            lines.append(f"    {c.reason}")
    return lines


def gpu_lines(saving: GPUSaving | None) -> list[str]:
    """GPUs in use now against the FP16-only fleet, and the weight memory the target saves."""
    if saving is None:
        return []
    lines = []
    if saving.gpus_in_use is not None and saving.baseline_fleet_gpus is not None:
        saved = saving.baseline_fleet_gpus - saving.gpus_in_use
        verdict = f"{saved} saved" if saved >= 0 else f"{-saved} more while both tiers run"
        lines.append(
            f"GPUs:       {saving.gpus_in_use} in use; the FP16-only fleet uses "
            f"{saving.baseline_fleet_gpus}: {verdict}"
        )
    if saving.weight_memory_gi_b is not None and saving.weight_memory_percent is not None:
        lines.append(
            f"GPU saving: {gib(saving.weight_memory_gi_b)} of weights "
            f"({saving.weight_memory_percent:g}%), {saving.gpus_per_replica} GPU(s) per replica"
        )
    if saving.relative_cost is not None:
        lines.append(
            f"Split cost: {saving.relative_cost:g} of the baseline serving everything "
            "(GPU-seconds per request, at full, over the observed class mix)"
        )
    return lines


def span(seconds: float) -> str:
    """`30m`, `24h`, `1h30m`: hours at most, as people write stage durations."""
    if seconds < 1:
        return format_duration(seconds)
    rest, parts = round(seconds), []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def describe_step(step: Step) -> str:
    text = f"mirror {step.mirror}%" if step.stage == "shadow" else f"live {step.weight}%"
    if step.duration_s is not None:
        text += f" for {span(step.duration_s)}"
    if step.sticky_header:
        text += f", sticky by {step.sticky_header}"
    return text


def current_step(status: QuantizedModelStatus, steps: Sequence[Step]) -> int | None:
    """The index of the step the rollout is at, or None before it starts."""
    if status.phase in (None, "Pending") or status.step is None or not steps:
        return None
    return min(max(status.step, 0), len(steps) - 1)


_MARKS = {
    "Progressing": "<- current",
    "Paused": "<- current (paused)",
    "Succeeded": "<- current (rollout complete)",
    "RolledBack": "<- rolled back from here",
    "Failed": "<- failed here",
}


def stage_tree(steps: Sequence[Step], status: QuantizedModelStatus) -> list[str]:
    """The stages as a tree, one leaf per step; done steps ticked, the current one marked."""
    current = current_step(status, steps)
    head = "Stages:" if current is None else f"Stages (step {current + 1} of {len(steps)}):"

    def mark(index: int) -> str:
        if current is None or index > current:
            return ""
        if index < current:
            return "done"
        return _MARKS.get(status.phase or "", "<- current")

    groups: list[tuple[str, list[int]]] = []
    for index, step in enumerate(steps):
        if groups and groups[-1][0] == step.stage and step.stage == "gradual":
            groups[-1][1].append(index)
        else:
            groups.append((step.stage, [index]))
    width = max(len(stage) for stage, _ in groups) if groups else 0
    rows: list[tuple[str, str]] = []  # (tree text, mark)
    for g, (stage, indices) in enumerate(groups):
        branch, trunk = ("└─ ", "   ") if g == len(groups) - 1 else ("├─ ", "│  ")
        if stage != "gradual":
            leaf = f"{stage.ljust(width)}   {describe_step(steps[indices[0]])}"
            rows.append((f"  {branch}{leaf}", mark(indices[0])))
            continue
        rows.append((f"  {branch}{stage}", ""))
        for i, index in enumerate(indices):
            twig = "└─ " if i == len(indices) - 1 else "├─ "
            rows.append((f"  {trunk}{twig}{describe_step(steps[index])}", mark(index)))
    column = max(len(text) for text, _ in rows) if rows else 0
    return [head, *((f"{text.ljust(column)}   {m}" if m else text) for text, m in rows)]


def threshold_text(result: RuleResult, rules: Sequence[Rule]) -> str:
    """`max 0.25` / `min 0.9`: the bound the value was held against, read from the spec's rules."""
    if result.threshold is None:
        return NONE
    for rule in rules:
        if rule.name != result.rule:
            continue
        for compare in ("max", "min"):
            bound = getattr(rule, compare)
            if bound is not None and math.isclose(parse_threshold(bound), result.threshold):
                return f"{compare} {number(result.threshold)}"
    return number(result.threshold)


def analysis_lines(
    status: QuantizedModelStatus, rules: Sequence[Rule], now: datetime.datetime | None
) -> list[str]:
    last = status.last_analysis
    if last is None:
        return ["Last analysis: none yet"]
    lines = [f"Last analysis: {last.verdict} at {when(last.at, now)}"]
    if not last.results:
        return [*lines, "  (no rules evaluated)"]
    headers = ["RULE", "VALUE", "THRESHOLD", "VERDICT"]
    rows = [[r.rule, number(r.value), threshold_text(r, rules), r.verdict] for r in last.results]
    if any(r.reason for r in last.results):
        headers.append("REASON")
        rows = [[*row, r.reason or ""] for row, r in zip(rows, last.results, strict=True)]
    return lines + table(headers, rows, indent="  ")


def rollback_lines(status: QuantizedModelStatus, now: datetime.datetime | None) -> list[str]:
    rollback = status.rollback
    if rollback is None:
        return []
    return [f"Rolled back at {when(rollback.at, now)}:", *(f"  - {r}" for r in rollback.reasons)]


def _figure(value: float | None, unit: str = "s") -> str:
    if value is None:
        return NONE
    return f"{value * 1000:.0f}ms" if unit == "s" else f"{value:.1f}"


def preflight_lines(status: QuantizedModelStatus, now: datetime.datetime | None) -> list[str]:
    """The checks run before the target got any request: each one's verdict, the gate's rules
    with their values and bounds, both tiers' figures, and why it failed."""
    pre = status.preflight
    if pre is None:
        return []
    head = f"Preflight:  {pre.phase} (attempt {pre.attempt}, Job {pre.job or NONE})"
    if pre.finished_at:
        head += f", ended {when(pre.finished_at, now)}"
    lines = [head]
    if pre.waiting:
        lines.append(f"  waiting: {pre.waiting}")
    for check in pre.checks:
        lines.append(f"  {check.name}: {check.verdict}")
        rows = [
            [r.rule, number(r.value), f"{r.bound} {r.threshold:g}", r.verdict]
            for r in check.results or []
        ]
        if rows:
            lines += table(["RULE", "VALUE", "BOUND", "VERDICT"], rows, indent="    ")
        figures = [
            (side, f) for side, f in (("baseline", check.baseline), ("target", check.target)) if f
        ]
        if figures:
            lines += table(
                ["TIER", "REQUESTS", "ERRORS", "TTFT P50", "TTFT P99", "ITL P50", "TOKENS/S"],
                [
                    [side, str(f.requests), str(f.errors), _figure(f.ttft_p50),
                     _figure(f.ttft_p99), _figure(f.itl_p50),
                     _figure(f.output_tokens_per_second, "n")]
                    for side, f in figures
                ],
                indent="    ",
            )  # fmt: skip
        if check.agreement is not None:
            lines.append(f"    probe agreement {check.agreement:.3f}")
    lines += [f"  - {r}" for r in pre.reasons]
    return lines


def condition_lines(status: QuantizedModelStatus) -> list[str]:
    if not status.conditions:
        return ["Conditions: none"]
    rows = [[c.type, c.status, c.reason, c.message] for c in status.conditions]
    return ["Conditions:", *table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows, indent="  ")]


def traffic_text(view: View) -> str:
    status = view.status
    if view.spec is not None and view.spec.mixed:
        return (
            f"live {percent(status.target_weight or 0)} of each class on its tier, "
            f"mirror {percent(status.mirror_percent or 0)} to {view.target.replace(',', ', ')}"
        )
    if status.target_weight is None and status.mirror_percent is None:
        return "no traffic on the target yet"
    return (
        f"live {percent(status.target_weight or 0)} on {view.target}, "
        f"mirror {percent(status.mirror_percent or 0)}"
    )


# ---------------------------------------------------------------------------------------------
# Whole views


def render_model(obj: Mapping[str, Any], now: datetime.datetime | None = None) -> str:
    """The detail view of one QuantizedModel (`kubectl quantrollout get NAME`)."""
    view = read_model(obj)
    status = view.status
    steps = steps_of(view.spec)
    phase = status.phase or "Pending"
    stage = status.stage or NONE
    if status.stage and status.stage_started_at:
        stage += f", since {when(status.stage_started_at, now)}"
    lines = [
        f"Name:       {view.namespace}/{view.name}",
        f"Model:      {view.model}",
        f"Baseline:   {view.baseline_text}",
        f"{'Targets:' if ',' in view.target else 'Target:':<12}{view.target_text}",
        f"Phase:      {phase}",
        f"Stage:      {stage}",
        f"Traffic:    {traffic_text(view)}",
    ]
    if view.paused:
        lines.append("Paused:     yes (spec.rollout.paused: true)")
    lines += gpu_lines(status.gpu_saving)
    lines += [f"Warning:    {p}" for p in view.problems]
    sections = [
        tier_lines(status.tiers or []),
        class_lines(status.classes or [], cheapest_tier(view.spec)),
        preflight_lines(status, now),
        stage_tree(steps, status),
        analysis_lines(status, rules_of(view.spec), now),
        rollback_lines(status, now),
        condition_lines(status),
    ]
    for section in sections:
        if section:
            lines += ["", *section]
    return "\n".join(lines) + "\n"


def table_row(obj: Mapping[str, Any], now: datetime.datetime | None) -> list[str]:
    view = read_model(obj)
    status = view.status
    last = status.last_analysis
    analysis = NONE if last is None else last.verdict
    if last is not None and age(last.at, now):
        analysis += f" ({age(last.at, now)} ago)"
    return [
        view.name,
        view.model,
        view.target,
        status.stage or NONE,
        percent(status.target_weight),
        percent(status.mirror_percent),
        status.phase or NONE,
        analysis,
    ]


def render_table(
    objs: Sequence[Mapping[str, Any]], namespace: str, now: datetime.datetime | None = None
) -> str:
    """All models of a namespace, one line each (`kubectl quantrollout get`)."""
    if not objs:
        return f"No QuantizedModels found in namespace {namespace}.\n"
    headers = ["NAME", "MODEL", "TARGET", "STAGE", "LIVE", "MIRROR", "PHASE", "LAST ANALYSIS"]
    ordered = sorted(objs, key=lambda o: str((o.get("metadata") or {}).get("name")))
    return "\n".join(table(headers, [table_row(o, now) for o in ordered])) + "\n"


_ACTION_EFFECT = {
    "promote": "move to the next step now, without waiting for its time or a passing analysis",
    "abort": "send all traffic back to the baseline and stop the rollout",
    "retry": "start the rollout again after a rollback (its preflight runs again first)",
}


def render_action(namespace: str, name: str, action: str) -> str:
    return (
        f"quantizedmodel {namespace}/{name}: asked the operator to {action} "
        f"({ACTION_ANNOTATION}={action}): {_ACTION_EFFECT[action]}.\n"
        "The operator acts once and removes the annotation; "
        f"watch it with: kubectl quantrollout get {name} -n {namespace} --watch\n"
    )


def render_pause(namespace: str, name: str, paused: bool) -> str:
    verb = "paused" if paused else "resumed"
    text = (
        f"quantizedmodel {namespace}/{name} {verb} (spec.rollout.paused: {str(paused).lower()}).\n"
    )
    if paused:
        text += "A breach of the rules still rolls back while paused.\n"
    return text + (
        "Warning: this changes the spec. If Argo CD manages this model with self-heal, it may "
        "revert the change; set spec.rollout.paused in Git instead.\n"
    )


def action_patch(action: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {ACTION_ANNOTATION: action}}}


def pause_patch(paused: bool) -> dict[str, Any]:
    return {"spec": {"rollout": {"paused": paused}}}


__all__ = [
    "ACTIONS",
    "ACTION_ANNOTATION",
    "action_patch",
    "pause_patch",
    "render_action",
    "render_model",
    "render_pause",
    "render_table",
]
