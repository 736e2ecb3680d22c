"""vllmsim: a vLLM simulator, the project's only stand-in (the real vLLM needs a GPU).

An OpenAI-compatible HTTP server that answers like vLLM's, exports vLLM's Prometheus series
under vLLM's names, and can be told while it runs to misbehave. The tests, the demo and the
benchmarks run it where a vLLM pod would be.

Run it::

    python -m vllmsim --port 8000 --model meta-llama/Meta-Llama-3-8B-Instruct [--host 127.0.0.1]
                      [--tier int4-awq] [--latency-ms 50] [--error-rate 0.05] ...
    python -m vllmsim serve MODEL [vllm serve options]   # refuses what the pinned vLLM refuses

until SIGTERM or SIGINT (graceful: open requests finish, exit status 0). In a test::

    from vllmsim import Simulator, SimConfig

    with Simulator(model="m", port=0, tier="int4-awq") as sim:   # or sim.start() / sim.stop()
        httpx.post(f"{sim.url}/v1/chat/completions", json={...})
        sim.configure(refusal_rate=0.2)     # same as POST /control {"refusal_rate": 0.2}

Endpoints:

- ``GET /health``: 200, or 503 when configured ``healthy=False``.
- ``GET /v1/models``: the served model name, as an OpenAI list.
- ``POST /v1/chat/completions``, ``POST /v1/completions``: OpenAI shapes with ``usage``;
  ``stream: true`` sends Server-Sent Events, one chunk per token, then ``data: [DONE]``
  (``stream_options.include_usage`` adds the usage chunk). Another model name: 404; malformed
  JSON or a bad field: 400; both with an OpenAI error body ``{"error": {...}}``.
- ``GET /metrics``: exactly the series the pinned vLLM release's stat logger exports, read from
  its contract (hack/contracts/): names, types, labels ``model_name`` and ``engine`` (and
  ``finished_reason``), buckets (metrics.py).
- ``GET /control``: the fault configuration (SimConfig) as JSON; ``POST /control`` with a JSON
  object of some of its fields changes them (an unknown key or bad value: 400, nothing changes).
- With ``tier`` set, every response carries the header ``x-vllmsim-tier``.
- vLLM's other request routes (apis.py), in the shapes of vLLM's protocol: ``POST /v1/responses``
  (stored; ``GET /v1/responses/{id}``, ``POST /v1/responses/{id}/cancel``), ``/v1/embeddings``
  (float or base64), ``/tokenize`` and ``/detokenize`` (byte-level tokens), ``/score``,
  ``/v1/score``, ``/rerank``, ``/v1/rerank``, ``/v2/rerank``, ``/v1/audio/transcriptions`` and
  ``/v1/audio/translations`` (multipart uploads), ``GET /version``.
- A chat request offering ``tools`` (and ``tool_choice`` not "none") is answered with a call of
  the named or first tool, its arguments picked by the answer key (``finish_reason``
  "tool_calls"; streamed as vLLM streams tool calls); with ``reasoning`` on, answers carry
  ``reasoning`` first.

Answers: a token is a whitespace-separated word. With temperature 0 (or absent, under the default
``default_temperature`` of 0) or ``top_k`` 1, the answer is a pure function of the prompt (about 32
words picked by a hash of it), the same on every simulator; ``max_tokens`` cuts it (finish_reason
"length"). Faults (SimConfig, all changeable at run time): ``latency_ms`` before the first token,
``token_delay_ms`` between tokens, ``error_rate`` (HTTP 500), ``refusal_rate`` ("I'm sorry, but I
can't help with that."), ``repetition_rate`` (one 4-gram repeated 12 times, or until max_tokens),
``divergence_rate`` (words disjoint from the normal answer's; a tool call's arguments too),
``output_scale`` (answer length factor), ``healthy``, ``stream_error_rate`` (a stream sends half
its answer, then vLLM's error event ``data: {"error": ...}`` and ``[DONE]`` under HTTP 200; a
non-streamed request gets 500), ``reasoning``, ``default_temperature`` (the temperature of a
request that gives none, as a model's generation config sets it; above 0 such requests sample).
Which requests a rate hits follows a low-discrepancy sequence over the simulator's request count,
so over N requests each fault hits rate * N of them to within about two (faults.py).
"""

from __future__ import annotations

from vllmsim.app import TIER_HEADER, SimState, build_app
from vllmsim.config import SimConfig
from vllmsim.server import Simulator
from vllmsim.text import REFUSAL

__all__ = ["REFUSAL", "TIER_HEADER", "SimConfig", "SimState", "Simulator", "build_app"]
