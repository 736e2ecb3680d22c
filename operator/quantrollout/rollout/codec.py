"""RolloutState to and from the model's status (camelCase dicts, RFC 3339 times). Pure."""

from __future__ import annotations

import datetime
from typing import Any

from .machine import RolloutState
from .steps import Step


def _time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state_from_status(status: dict[str, Any]) -> RolloutState:
    book = status.get("rollout") or {}
    if not book.get("id"):
        return RolloutState()
    phase = status.get("phase")
    return RolloutState(
        rollout_id=book["id"],
        attempt=int(book.get("attempt", 0)),
        phase=phase
        if phase in ("Pending", "Progressing", "Paused", "Succeeded", "RolledBack")
        else "Pending",
        step=int(status.get("step") or 0),
        target_weight=int(status.get("targetWeight") or 0),
        mirror_percent=int(status.get("mirrorPercent") or 0),
        step_started_at=_time(status.get("stageStartedAt")),
        failures=int(book.get("failures", 0)),
        inconclusive_since=_time(book.get("inconclusiveSince")),
        last_evaluation_at=_time(book.get("lastEvaluationTime")),
        stages_hash=book.get("stagesHash"),
        rollback_reasons=tuple((status.get("rollback") or {}).get("reasons") or ()),
        rolled_back_at=_time(book.get("rolledBackAt")),
        held=book.get("heldFor"),
    )


def status_from_state(state: RolloutState, steps: tuple[Step, ...]) -> dict[str, Any]:
    """The status fields the rollout owns (None clears a field in a merge patch)."""
    step = steps[min(state.step, len(steps) - 1)]
    return {
        "phase": state.phase,
        "stage": step.stage if state.phase != "Pending" else None,
        "step": state.step,
        "targetWeight": state.target_weight,
        "mirrorPercent": state.mirror_percent,
        "stageStartedAt": rfc3339(state.step_started_at),
        "rollback": {"at": rfc3339(state.rolled_back_at), "reasons": list(state.rollback_reasons)}
        if state.rollback_reasons
        else None,
        "rollout": {
            "id": state.rollout_id,
            "attempt": state.attempt,
            "failures": state.failures,
            "inconclusiveSince": rfc3339(state.inconclusive_since),
            "lastEvaluationTime": rfc3339(state.last_evaluation_at),
            "stagesHash": state.stages_hash,
            "rolledBackAt": rfc3339(state.rolled_back_at),
            "heldFor": state.held,
        },
    }
