"""The simulator's fault configuration (`SimConfig`): what to get wrong, and how often.

Every field can be changed while the simulator runs (`POST /control`, `Simulator.configure`);
a change is a partial update validated as a whole, so an unknown key or an out-of-range value
is refused and the configuration in force stays as it was.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The answer faults share one draw per request (see faults.py), so their rates must fit in 1.
ANSWER_FAULTS = ("refusal_rate", "repetition_rate", "divergence_rate")


class SimConfig(BaseModel):
    """Faults to inject. The defaults are a healthy, instant, well-behaved server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: float = Field(0.0, ge=0, description="added before the first token")
    token_delay_ms: float = Field(0.0, ge=0, description="between two tokens")
    error_rate: float = Field(0.0, ge=0, le=1, description="fraction of requests answered 500")
    repetition_rate: float = Field(
        0.0, ge=0, le=1, description="fraction of answers that are a repetition loop"
    )
    refusal_rate: float = Field(0.0, ge=0, le=1, description="fraction of answers that refuse")
    divergence_rate: float = Field(
        0.0, ge=0, le=1, description="fraction of answers unlike the deterministic answer"
    )
    output_scale: float = Field(1.0, ge=0, description="multiplies the length of every answer")
    healthy: bool = Field(True, description="False: GET /health answers 503")
    stream_error_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of requests whose generation fails after it started: a stream "
        'sends half its tokens, then data: {"error": ...} and [DONE] under HTTP 200; a '
        "non-streamed request gets 500",
    )
    reasoning: bool = Field(
        False, description="answers carry reasoning (as with vLLM's --reasoning-parser)"
    )
    default_temperature: float = Field(
        0.0,
        ge=0,
        description="the temperature of a request that gives none (vLLM: the model's "
        "generation config); 0: such requests are greedy",
    )

    @model_validator(mode="after")
    def _failures_fit(self) -> SimConfig:
        # Both failures share one draw per request (faults.py): their rates must fit in 1.
        if self.error_rate + self.stream_error_rate > 1 + 1e-9:
            raise ValueError("error_rate + stream_error_rate > 1: lower one of them first")
        return self

    @model_validator(mode="after")
    def _answer_faults_fit(self) -> SimConfig:
        total = sum(getattr(self, name) for name in ANSWER_FAULTS)
        if total > 1 + 1e-9:
            raise ValueError(
                f"{' + '.join(ANSWER_FAULTS)} = {total:g} > 1: an answer has only one fault, "
                "lower one of them first"
            )
        return self

    def updated(self, changes: dict[str, Any]) -> SimConfig:
        """A new configuration with `changes` applied; raises pydantic.ValidationError (a
        ValueError) on an unknown key or a bad value."""
        return SimConfig.model_validate({**self.model_dump(), **changes})


def describe(error: ValidationError) -> str:
    """A refused change in one line, e.g. `error_rate: Input should be less than or equal to 1`."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )
