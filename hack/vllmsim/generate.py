"""What one request is answered: the tokens and the finish reason, given the request, the fault
decision for it and the configuration in force. Pure, like text.py and faults.py."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from vllmsim import text
from vllmsim.config import SimConfig
from vllmsim.faults import Answer, Decision
from vllmsim.wire import CompletionRequest

MAX_LOOP_TOKENS = 1024  # a repetition loop runs to max_tokens, but not further than this


@dataclass(frozen=True)
class Generation:
    tokens: list[str]
    finish_reason: str  # "stop" | "length" (vLLM's finished_reason; a tool call is "stop")
    prompt_tokens: int
    reasoning: list[str] = field(default_factory=list)  # with SimConfig.reasoning
    tool_call: tuple[str, str] | None = None  # (name, arguments as JSON): the answer calls it

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        call = len(self.tool_call[1].split()) if self.tool_call else 0
        return len(self.tokens) + len(self.reasoning) + call


def answer_key(request: CompletionRequest, default_temperature: float = 0.0) -> str:
    """What the answer is a function of: the prompt alone when sampling is greedy (temperature
    0, or absent with a default of 0, or top_k 1); with sampling, the prompt and the request's
    seed, or chance."""
    temperature = request.temperature
    if temperature is None:
        temperature = default_temperature
    if temperature <= 0 or request.top_k == 1:
        return request.prompt
    seed = request.seed if request.seed is not None else secrets.randbits(64)
    return f"{request.prompt}\x1eseed={seed}"


def _tool_call(request: CompletionRequest, key: str, divergent: bool) -> tuple[str, str] | None:
    """The call of the request's tool: each parameter gets a word picked by the answer key (from
    the divergent vocabulary for a divergent answer, so the two calls differ)."""
    if request.tool is None:
        return None
    pick = text.divergent_answer if divergent else text.normal_answer
    words = pick(key, max(1, len(request.tool.parameters)))
    arguments = dict(zip(request.tool.parameters, words, strict=False))
    return request.tool.name, json.dumps(arguments)


def generate(request: CompletionRequest, decision: Decision, config: SimConfig) -> Generation:
    key = answer_key(request, config.default_temperature)
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
    reasoning = text.normal_answer("reasoning\x1e" + key, 8) if config.reasoning else []
    call = _tool_call(request, key, decision.answer is Answer.DIVERGENT)
    if call is not None:
        tokens = []  # the answer is the call
    return Generation(tokens, finish, text.count_tokens(request.prompt), reasoning, call)
