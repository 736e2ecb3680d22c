"""A rollout's stages, defaults applied, flattened into the steps traffic walks through:
shadow (0% live, mirror), ab (one weight), gradual (one step per weight), full (100%)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from quantrollout import defaults
from quantrollout.api.durations import parse_duration
from quantrollout.api.spec import QuantizedModelSpec, Stage, StageName

# The stages of quantrollout.defaults, as the API's models.
DEFAULT_STAGES = tuple(Stage.model_validate(stage) for stage in defaults.STAGES)


@dataclass(frozen=True)
class Step:
    stage: StageName
    weight: int  # % of live traffic on the target
    mirror: int  # % of requests mirrored to the target
    duration_s: float | None  # time to hold before the next step; None at full
    sticky_header: str | None = None


def steps_for(spec: QuantizedModelSpec) -> tuple[Step, ...]:
    stages = spec.rollout.stages if spec.rollout and spec.rollout.stages else list(DEFAULT_STAGES)
    steps: list[Step] = []
    for stage in stages:
        if stage.name == "shadow":
            steps.append(
                Step(
                    "shadow",
                    0,
                    stage.mirror_percent or defaults.SHADOW_MIRROR_PERCENT,
                    parse_duration(stage.duration or defaults.SHADOW_DURATION),
                )
            )
        elif stage.name == "ab":
            sticky = (stage.sticky_by or defaults.AB_STICKY_BY).removeprefix("header:")
            duration = parse_duration(stage.duration or defaults.AB_DURATION)
            steps.append(Step("ab", stage.weight or defaults.AB_WEIGHT, 0, duration, sticky))
        elif stage.name == "gradual":
            hold = parse_duration(stage.step_duration or defaults.GRADUAL_STEP_DURATION)
            steps += [
                Step("gradual", w, 0, hold) for w in stage.weights or defaults.GRADUAL_WEIGHTS
            ]
        else:
            steps.append(Step("full", 100, 0, None))
    return tuple(steps)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def rollout_id(spec: QuantizedModelSpec) -> str:
    """Identifies what is rolled out: the target's artifact, format and precision, and its name
    (a new name is a new Deployment, with no pod yet to hold traffic on). Any other edit of the
    target (its serving settings, say) keeps the rollout where it is."""
    if spec.targets is not None:
        # Mixed precision: any tier added, removed or changed is a new rollout (a new policy).
        return _digest(
            [["mixed"], *([t.name, t.artifact, t.format, t.precision] for t in spec.targets)]
        )
    t = spec.quantized()[0]
    return _digest([t.name, t.artifact, t.format, t.precision])


def legacy_rollout_id(spec: QuantizedModelSpec) -> str:
    """The id releases before the one-pass operator gave a rollout (a digest of the whole target):
    a rollout recorded under it is the same rollout, not a new one, after an upgrade."""
    if spec.targets is not None:
        return rollout_id(spec)  # mixed precision came after that release
    return _digest(spec.quantized()[0].to_wire())


def stages_hash(steps: tuple[Step, ...]) -> str:
    """Notices an edit of the stages mid-rollout."""
    return _digest([[s.stage, s.weight, s.mirror, s.duration_s] for s in steps])
