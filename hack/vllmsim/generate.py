"""What one request is answered: the tokens and the finish reason, given the request, the fault
decision for it and the configuration in force. Pure, like text.py and faults.py."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from vllmsim import text
from vllmsim.config import SimConfig
from vllmsim.faults import Answer, Decision
from vllmsim.wire import CompletionRequest

MAX_LOOP_TOKENS = 1024  # a repetition loop runs to max_tokens, but not further than this


@dataclass(frozen=True)
class Generation:
    tokens: list[str]
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def answer_key(request: CompletionRequest) -> str:
    """What the answer is a function of: the prompt alone when sampling is greedy
    (temperature 0 or absent); with sampling, the prompt and the request's seed, or chance."""
    if request.temperature <= 0:
        return request.prompt
    seed = request.seed if request.seed is not None else secrets.randbits(64)
    return f"{request.prompt}\x1eseed={seed}"


def generate(request: CompletionRequest, decision: Decision, config: SimConfig) -> Generation:
    key = answer_key(request)
    limit = request.max_tokens
    finish = "stop"
    if decision.answer is Answer.REFUSAL:
        tokens = text.refusal_answer()
    elif decision.answer is Answer.REPETITION:
        loop = text.LOOP_GRAM * text.LOOP_REPEATS if limit is None else limit
        tokens = text.repetition_answer(key, min(loop, MAX_LOOP_TOKENS))
        finish = "length"  # a loop ends only where it is cut
    else:
        length = text.answer_length(key, config.output_scale)
        pick = text.divergent_answer if decision.answer is Answer.DIVERGENT else text.normal_answer
        tokens = pick(key, length)
    if limit is not None and len(tokens) > limit:
        tokens, finish = tokens[:limit], "length"
    return Generation(tokens, finish, text.count_tokens(request.prompt))
