"""The paths of vLLM's HTTP server that the router forwards to a model's tiers, and how it reads
each one's request. Pure.

Every request a client sends to a model goes through the same split and stickiness, whatever
its path: a user on the target tier gets their embeddings, tokens and transcriptions from the
target too. The router reads only what it needs from a request: the `model` (which
QuantizedModel; optional, as in vLLM), `stream`, and for the paths whose answers are generated
text (`generates`: chat, completions, the Responses API) how the request samples, which is what
the shadow comparison needs. Only those answers are inspected for the quality signals and
mirrored to the target in shadow; the others are counted (requests, errors, latency) and
passed on byte for byte.

The list follows vLLM's OpenAI-compatible server (`vllm serve`), checked against the routes of
the pinned release in `hack/contracts/` by tests/unit/test_router_endpoints.py, which also
names every vLLM route the router leaves out and why (health, metrics, admin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Body = Literal["json", "form", "none"]  # form: multipart/form-data (audio uploads)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How the router handles one path."""

    method: str  # the one method vLLM serves it with
    body: Body
    generates: bool = False  # answers are generated text: inspected, and mirrored in shadow


_GENERATE = Endpoint("POST", "json", generates=True)
_JSON = Endpoint("POST", "json")
_FORM = Endpoint("POST", "form")
_GET = Endpoint("GET", "none")
_ACTION = Endpoint("POST", "none")

FORWARDED: dict[str, Endpoint] = {
    # Generation, inspected and mirrored.
    "/v1/chat/completions": _GENERATE,
    "/v1/completions": _GENERATE,
    "/v1/responses": _GENERATE,
    # Stored responses of the Responses API (sticky users find theirs on the tier that made it).
    "/v1/responses/{response_id}": _GET,
    "/v1/responses/{response_id}/cancel": _ACTION,
    # Other generation APIs vLLM serves: routed and counted, their answers not inspected.
    "/v1/chat/completions/batch": _JSON,
    "/v1/messages": _JSON,  # Anthropic Messages
    "/v1/messages/count_tokens": _JSON,
    "/cohere/v2/chat": _JSON,
    "/inference/v1/generate": _JSON,  # tokens in, tokens out
    "/v1/decisions": _JSON,
    "/v1/systemone": _JSON,
    "/generative_scoring": _JSON,
    # Pooling models: embeddings, classification, scores.
    "/v1/embeddings": _JSON,
    "/v2/embed": _JSON,
    "/pooling": _JSON,
    "/classify": _JSON,
    "/score": _JSON,
    "/v1/score": _JSON,
    "/rerank": _JSON,
    "/v1/rerank": _JSON,
    "/v2/rerank": _JSON,
    # Tokens and rendered prompts.
    "/tokenize": _JSON,
    "/detokenize": _JSON,
    "/v1/chat/completions/render": _JSON,
    "/v1/completions/render": _JSON,
    "/v1/messages/render": _JSON,
    "/cohere/v2/chat/render": _JSON,
    "/v1/responses/render": _JSON,
    "/v1/chat/completions/derender": _JSON,
    "/v1/completions/derender": _JSON,
    # Speech to text (multipart uploads).
    "/v1/audio/transcriptions": _FORM,
    "/v1/audio/translations": _FORM,
    # The tier's vLLM version.
    "/version": _GET,
}
# The paths whose answers are generated text: inspected, mirrored, and admitted under the overload
# bounds (router.admission).
GENERATES = frozenset(path for path, endpoint in FORWARDED.items() if endpoint.generates)

_RESPONSES = "/v1/responses/"


def find(path: str) -> tuple[str, Endpoint] | None:
    """The route (as FORWARDED names it) and endpoint of a request path, or None."""
    endpoint = FORWARDED.get(path)
    if endpoint is not None:
        return path, endpoint
    if path.startswith(_RESPONSES):  # /v1/responses/{response_id}[/cancel]
        rest = path[len(_RESPONSES) :]
        response_id, _, tail = rest.partition("/")
        if response_id and "/" not in tail:
            route = "/v1/responses/{response_id}" + (f"/{tail}" if tail else "")
            endpoint = FORWARDED.get(route)
            if endpoint is not None:
                return route, endpoint
    return None
