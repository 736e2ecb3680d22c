"""Which user actions a rollout acts on in which phase: one table for the operator (which refuses
an action asked in the wrong phase, with an Event saying why) and for the Argo CD resource actions
(`charts/quantrollout/argocd/actions/discovery.lua` offers exactly these; tests run it under Argo
CD's Lua engine against this table, and check the table against `machine.decide`). Pure.

`promote`, `abort` and `retry` are one-shot requests (the annotation `quantrollout.io/action`);
`pause` and `resume` set `spec.rollout.paused`, which is state, not a request, so they are offered
by that field's value rather than refused.
"""

from __future__ import annotations

from typing import Final, Literal

OneShot = Literal["promote", "abort", "retry"]
ONE_SHOT: Final[tuple[OneShot, ...]] = ("promote", "abort", "retry")
ACTIONS: Final = (*ONE_SHOT, "pause", "resume")
# Every phase the status can hold; None: the operator has not started a rollout yet.
PHASES: Final = (None, "Pending", "Progressing", "Paused", "Succeeded", "RolledBack", "Failed")
FINAL: Final = ("Succeeded", "RolledBack", "Failed")

# The phases in which each one-shot action changes something (machine.decide).
ACTS_IN: Final[dict[str, tuple[str, ...]]] = {
    "promote": ("Progressing", "Paused"),
    "abort": ("Pending", "Progressing", "Paused"),
    "retry": ("RolledBack",),
}
_WHY_NOT: Final[dict[str | None, str]] = {
    None: "no rollout has started yet",
    "Pending": "the rollout is waiting for both tiers to be ready and for its preflight",
    "Progressing": "the rollout is in progress",
    "Paused": "the rollout is paused",
    "Succeeded": "the rollout is complete",
    "RolledBack": "the rollout was rolled back (retry it first)",
    "Failed": "the spec is invalid (see the Ready condition)",
}


def refusal(action: str, phase: str | None) -> str | None:
    """None when `action` acts in `phase`; otherwise why not, in words for the Event."""
    acts_in = ACTS_IN.get(action)
    if acts_in is None:
        return f"unknown action {action!r}: one of {', '.join(ONE_SHOT)}"
    if phase in acts_in:
        return None
    now = _WHY_NOT.get(phase, f"the phase is {phase}")
    return f"{action} acts only when the phase is {' or '.join(acts_in)}, and {now}"


def offered(phase: str | None, paused: bool) -> dict[str, bool]:
    """Each action and whether it is offered (enabled) for a model in `phase` whose
    `spec.rollout.paused` is `paused`."""
    table: dict[str, bool] = {a: refusal(a, phase) is None for a in ONE_SHOT}
    table["pause"] = not paused and phase not in FINAL
    table["resume"] = paused
    return table
