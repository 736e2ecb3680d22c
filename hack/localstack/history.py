"""Checks over a recorded history of QuantizedModels: every version of every model, in the order
an independent watch saw them. Pure: versions in, a list of problems (in words) out; an empty
list means the history is one the operator may legally produce.

The chaos test records such a history while it SIGKILLs the operator, and these checks judge it
with the state machine's own definitions (its steps from the spec, its phases, its `decide`):

- every version is a legal state: its stage, weights and the traffic the router reads agree
  with the step it is at (`illegal_states`);
- every change of the rollout's state is one `decide` makes from the previous version with the
  evaluation recorded in the same write, or with none (`illegal_transitions`);
- every promotion and every increase of the live weight comes with a passing analysis, made
  after the step was held for its duration and not used for any earlier promotion
  (`unearned_promotions`);
- a model with a breach never promotes once the breach was judged, and ends rolled back at the
  stage it was injected in, with its reason, live weight 0 (`breach_problems`);
- every model ends Succeeded or RolledBack within a bound, and stays there (`finish_problems`).
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from quantrollout.analysis.rules import Compare, RuleQuery
from quantrollout.api.spec import QuantizedModelSpec
from quantrollout.health import ObservedTier
from quantrollout.manifests.plan import parse_spec
from quantrollout.pass_.plan import capacity_plan, capacity_tiers, decide_rollout, rollout_inputs
from quantrollout.rollout.codec import state_from_status, status_from_state
from quantrollout.rollout.machine import Evaluation, Phase, RolloutState
from quantrollout.rollout.steps import Step, steps_for

PHASES: tuple[str, ...] = get_args(Phase)
FINAL = ("Succeeded", "RolledBack")
_MS = datetime.timedelta(microseconds=999)  # status times are cut to milliseconds
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Seen:
    """One version of one model as the watch delivered it: `at` is the observer's clock."""

    name: str
    resource_version: str
    at: float
    spec: dict[str, Any]
    status: dict[str, Any]


@dataclass(frozen=True)
class Breach:
    """A fault injected into a model's target at `stage`, at `injected_at` (observer's clock);
    the rollback must name a rule starting with `reason`."""

    stage: str
    reason: str
    injected_at: float


@dataclass(frozen=True)
class Expectation:
    created_at: float
    breach: Breach | None = None


@dataclass
class _Model:
    spec: QuantizedModelSpec
    steps: tuple[Step, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.steps = steps_for(self.spec)


def _time(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _model(seen: Seen) -> _Model:
    parsed = parse_spec(seen.spec)
    if not isinstance(parsed, QuantizedModelSpec):
        raise ValueError(f"{seen.name}: the recorded spec does not parse: {parsed}")
    return _Model(parsed)


def by_model(history: Iterable[Seen]) -> dict[str, list[Seen]]:
    models: dict[str, list[Seen]] = {}
    for seen in history:
        models.setdefault(seen.name, []).append(seen)
    return models


def _where(seen: Seen) -> str:
    s = seen.status
    return (
        f"{seen.name}@{seen.resource_version} (phase {s.get('phase')}, stage {s.get('stage')}, "
        f"step {s.get('step')}, weight {s.get('targetWeight')})"
    )


def _live(seen: Seen) -> int | None:
    """The live weight the router applies (status.traffic), None before the first tick."""
    traffic = seen.status.get("traffic") or {}
    weight = traffic.get("targetWeight")
    return int(weight) if weight is not None else None


def _started(seen: Seen) -> bool:
    return bool((seen.status.get("rollout") or {}).get("id"))


def illegal_states(history: Sequence[Seen]) -> list[str]:
    problems = []
    for seen in history:
        if not _started(seen):
            continue
        s, steps = seen.status, _model(seen).steps
        phase, step, where = s.get("phase"), int(s.get("step") or 0), _where(seen)
        if phase not in PHASES:
            problems.append(f"{where}: phase {phase!r} is not one of {PHASES}")
            continue
        if not 0 <= step < len(steps):
            problems.append(f"{where}: step {step} outside the {len(steps)} steps")
            continue
        want = steps[step]
        weight, mirror = s.get("targetWeight"), s.get("mirrorPercent")
        if phase == "Pending":
            if (weight, mirror, s.get("stage")) != (0, 0, None):
                problems.append(f"{where}: Pending with traffic or a stage")
        elif s.get("stage") != want.stage:
            problems.append(f"{where}: stage {s.get('stage')} is not step {step}'s {want.stage}")
        elif phase == "RolledBack":
            if (weight, mirror) != (0, 0):
                problems.append(f"{where}: RolledBack with {weight}% live, {mirror}% mirrored")
            if not (s.get("rollback") or {}).get("reasons"):
                problems.append(f"{where}: RolledBack without a reason")
        elif (weight, mirror) != (want.weight, want.mirror):
            problems.append(
                f"{where}: {weight}% live, {mirror}% mirrored at a step of "
                f"{want.weight}% live, {want.mirror}% mirrored"
            )
        if (phase == "Succeeded" and want.stage != "full") or (
            phase in ("Progressing", "Paused") and want.stage == "full"
        ):
            problems.append(f"{where}: phase {phase} at stage {want.stage}")
        traffic = s.get("traffic")
        if traffic is None:
            if phase != "Pending":
                problems.append(f"{where}: a rollout state without status.traffic")
            continue
        book = s["rollout"]
        expected = (f"{book['id']}-{book.get('attempt', 0)}", weight, mirror)
        actual = (
            traffic.get("rolloutId"),
            traffic.get("targetWeight"),
            traffic.get("mirrorPercent"),
        )
        if actual != expected:
            problems.append(
                f"{where}: status.traffic (rollout, live, mirror) {actual} is not {expected}"
            )
    return problems


def _evaluation(status: dict[str, Any]) -> Evaluation | None:
    """The evaluation recorded in `status.lastAnalysis`, with the reasons `judge` gave it."""
    last = status.get("lastAnalysis")
    if not last:
        return None
    reasons: list[str] = []
    for r in last.get("results") or []:
        if last["verdict"] == "Fail" and r.get("verdict") == "Fail":
            value, threshold = float(r["value"]), float(r["threshold"])
            compare: Compare = "max" if value > threshold else "min"
            reasons.append(RuleQuery(r["rule"], "", compare, threshold).describe(value))
        elif last["verdict"] == "Inconclusive" and r.get("verdict") == "Inconclusive":
            reasons.append(str(r.get("reason")))
    return Evaluation(last["verdict"], tuple(reasons))


def _normal(state: RolloutState, steps: tuple[Step, ...]) -> RolloutState:
    """As it reads back from a status (times cut to milliseconds)."""
    return state_from_status(status_from_state(state, steps))


def _rollout_view(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status.get(k) for k in ("phase", "stage", "step", "targetWeight", "mirrorPercent",
                                       "stageStartedAt", "rollback", "rollout")}  # fmt: skip


def seen_tiers(status: dict[str, Any]) -> dict[str, ObservedTier]:
    """The tiers as the pass that wrote `status` observed them: one pass records its observation
    of the tiers and its decision in one write."""
    out = {}
    for t in status.get("tiers") or []:
        ready, replicas = bool(t.get("ready")), int(t.get("replicas") or 0)
        out[t["name"]] = ObservedTier(
            exists=True, replicas=replicas, ready_replicas=int(t.get("readyReplicas") or 0),
            updated_replicas=replicas if ready else 0, available=ready, generation_observed=True,
        )  # fmt: skip
    return out


def illegal_transitions(history: Sequence[Seen]) -> list[str]:
    """Each change of the rollout's fields must be `decide(previous, inputs)` for the inputs the
    operator had (built by the operator's own `rollout_inputs`): the tiers recorded with the
    decision, this write's evaluation (if it recorded a new one) and a clock reading within the
    millisecond the write records."""
    problems = []
    for name, versions in by_model(history).items():
        before = Seen(name, "(none)", 0.0, versions[0].spec, {})
        for a, b in itertools.pairwise([before, *versions]):
            if _rollout_view(a.status) == _rollout_view(b.status):
                continue
            model = _model(b)
            sa, sb = state_from_status(a.status), state_from_status(b.status)
            evaluated = sb.last_evaluation_at != sa.last_evaluation_at
            evaluation = _evaluation(b.status) if evaluated else None
            if evaluated and (evaluation is None or sb.last_evaluation_at is None):
                problems.append(f"{_where(b)}: a new evaluation time without lastAnalysis")
                continue
            if (
                evaluation is not None
                and _time(b.status["lastAnalysis"]["at"]) != sb.last_evaluation_at
            ):
                problems.append(f"{_where(b)}: lastAnalysis.at is not the evaluation time")
            clock = (
                sb.last_evaluation_at if evaluated else (sb.step_started_at or sb.rolled_back_at)
            )
            # Without a time in the write (a start waiting for its tiers) the clock is not used.
            candidates = [clock, clock + _MS] if clock else [_EPOCH]
            reached = []
            for now in candidates:
                seen = seen_tiers(b.status)
                # Whether capacity let traffic move on: the tiers as recorded with the decision,
                # the traffic the router applied before it.
                gate = capacity_plan(
                    model.spec, sa, capacity_tiers(model.spec, seen), a.status.get("traffic"), now
                )
                inputs = rollout_inputs(
                    model.spec, "", name, now, seen, evaluation=evaluation,
                    ready_for_next=gate.ready_for_next,
                )  # fmt: skip
                reached.append(_normal(decide_rollout(model.spec, sa, inputs).state, model.steps))
            if sb not in reached:
                problems.append(
                    f"{_where(a)} -> {_where(b)}: not a transition of the state machine "
                    f"(evaluation {evaluation}; it would reach {reached[0]}, saw {sb})"
                )
    return problems


def unearned_promotions(history: Sequence[Seen]) -> list[str]:
    """Every promotion (a higher step) and every rise of the live weight must come with a
    passing analysis of its own: made after the step was held for its duration, and not
    the one an earlier promotion already used."""
    problems = []
    for _, versions in by_model(history).items():
        used: set[str] = set()
        for a, b in itertools.pairwise(versions):
            if not (_started(a) and _started(b)):
                continue
            same = a.status["rollout"].get("id") == b.status["rollout"].get("id")
            rose = (_live(b) or 0) > (_live(a) or 0)
            promoted = same and int(b.status.get("step") or 0) > int(a.status.get("step") or 0)
            if not (rose or promoted):
                continue
            where = f"{_where(a)} -> {_where(b)}"
            if int(b.status.get("step") or 0) != int(a.status.get("step") or 0) + 1:
                problems.append(f"{where}: not a promotion by exactly one step")
            last = b.status.get("lastAnalysis") or {}
            if last.get("verdict") != "Pass":
                problems.append(f"{where}: promoted on a {last.get('verdict')} analysis")
                continue
            if last["at"] in used:
                problems.append(f"{where}: promoted again on the analysis of {last['at']}")
            used.add(last["at"])
            held_from = _time(a.status.get("stageStartedAt"))
            duration = _model(a).steps[int(a.status.get("step") or 0)].duration_s
            at = _time(last["at"])
            if held_from is None or at is None or duration is None:
                problems.append(f"{where}: promoted from a step without a start or a duration")
            elif (at + _MS - held_from).total_seconds() < duration:
                problems.append(
                    f"{where}: the passing analysis at {last['at']} came "
                    f"{(at - held_from).total_seconds():.3f}s into a {duration:g}s step"
                )
    return problems


def breach_problems(versions: Sequence[Seen], breach: Breach) -> list[str]:
    """After the first Fail at or after the injection, nothing is promoted; the model ends
    RolledBack at the injected stage, with the breached rule named, 0% live and mirrored."""
    problems = []
    judged = False
    for a, b in itertools.pairwise(versions):
        last = a.status.get("lastAnalysis") or {}
        at = _time(last.get("at"))
        if last.get("verdict") == "Fail" and at and at.timestamp() >= breach.injected_at:
            judged = True
        if judged and (
            int(b.status.get("step") or 0) > int(a.status.get("step") or 0)
            or (_live(b) or 0) > (_live(a) or 0)
        ):
            problems.append(f"{_where(a)} -> {_where(b)}: promoted after the breach was judged")
    if not versions:
        return [f"no version recorded (breach at {breach.stage})"]
    final = versions[-1]
    s, where = final.status, _where(final)
    if s.get("phase") != "RolledBack":
        problems.append(f"{where}: a breach at {breach.stage} did not end RolledBack")
        return problems
    if s.get("stage") != breach.stage:
        problems.append(f"{where}: rolled back at {s.get('stage')}, not at {breach.stage}")
    reasons = (s.get("rollback") or {}).get("reasons") or []
    if not any(r.startswith(breach.reason) for r in reasons):
        problems.append(f"{where}: no rollback reason starts with {breach.reason!r}: {reasons}")
    traffic = s.get("traffic") or {}
    if (s.get("targetWeight"), traffic.get("targetWeight"), traffic.get("mirrorPercent")) != (
        0,
        0,
        0,
    ):
        problems.append(f"{where}: rolled back but traffic is {traffic}")
    return problems


def finish_problems(
    versions: Sequence[Seen], expectation: Expectation, bound_s: float
) -> list[str]:
    """Ends Succeeded (no breach) or RolledBack (a breach) within `bound_s` of its creation, and
    once final never leaves that phase (a lost rollback would show here)."""
    if not versions:
        return ["no version recorded"]
    name = versions[0].name
    want = "RolledBack" if expectation.breach else "Succeeded"
    problems = []
    first_final = next((v for v in versions if v.status.get("phase") in FINAL), None)
    if first_final is None:
        return [f"{_where(versions[-1])}: never finished (wanted {want})"]
    took = first_final.at - expectation.created_at
    if took > bound_s:
        problems.append(f"{name}: finished {took:.0f}s after its creation (bound {bound_s:.0f}s)")
    for later in versions[versions.index(first_final) :]:
        if later.status.get("phase") != first_final.status.get("phase"):
            problems.append(f"{_where(later)}: left {first_final.status.get('phase')}")
            break
    final = versions[-1].status
    if final.get("phase") != want:
        problems.append(f"{_where(versions[-1])}: ended {final.get('phase')}, wanted {want}")
    elif want == "Succeeded" and (final.get("stage"), _live(versions[-1])) != ("full", 100):
        problems.append(f"{_where(versions[-1])}: Succeeded but not 100% live at full")
    return problems


def check(
    history: Sequence[Seen], expectations: dict[str, Expectation], bound_s: float
) -> list[str]:
    """All of the above, for every expected model (a model recorded but not expected, too)."""
    problems = illegal_states(history) + illegal_transitions(history)
    problems += unearned_promotions(history)
    models = by_model(history)
    for name in sorted(set(models) - set(expectations)):
        problems.append(f"{name}: recorded but not expected")
    for name, expectation in sorted(expectations.items()):
        versions = models.get(name, [])
        problems += finish_problems(versions, expectation, bound_s)
        if expectation.breach:
            problems += breach_problems(versions, expectation.breach)
    return problems
