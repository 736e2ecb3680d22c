"""The built-in router: an OpenAI-compatible reverse proxy in front of a model's vLLM tiers.

It splits live traffic between the baseline and the target tier by the weight the operator
writes into `QuantizedModel.status.traffic` (sticky per user when a header is configured), on
every request path of vLLM's server (`endpoints`), mirrors a share of requests to the target
and compares the answers (and a share again to the baseline, to measure its agreement with
itself), falls back to the baseline when the target fails, and exports the per-tier quality
signals the rollout is judged on (`quantrollout.signals`).

Pure decisions: `split` (which tier), `endpoints` (which paths, read how), `requests` (what is
refused, what is read), `quality` (repetition, refusals), `agreement` (shadow scores),
`answers` (what an upstream answered), `routes` (the route table and upstream URLs). I/O at the edges: `source` and `kube_source` (where the table
comes from), `http1`, `pool` and `upstream` (HTTP to the tiers),
`proxy` and `shadow` (one request), `metrics`, `app` (ASGI), `server` (uvicorn).
"""
