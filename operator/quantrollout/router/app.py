"""The router as an ASGI application: routing of the endpoints, request validation, and
the lifecycle of the pooled client, the config source and the shadow calls.

    vLLM's request paths (endpoints.FORWARDED)  proxied to the model's tiers: /v1/chat/completions,
                                                /v1/completions, /v1/responses, /v1/embeddings,
                                                /tokenize, /v1/audio/transcriptions, /version, ...
    GET  /v1/models                             the served models in the route table
    GET  /health                                200 once the route table is loaded, else 503
    GET  /metrics                               the router's series (Prometheus text format)

A model served mixed precision (its `status.traffic` has `targets` or `classes`) has each request
classified (`classify`, on the body already parsed, or the `x-quantrollout-class` header) and
split per class (`class_split`): the class's share of the sticky buckets goes to its tier, the
rest to where the class was, and a class without a route or whose tier is unknown to the router
goes to the baseline, counted. Mirrored copies go to every quantized tier. Every other model is
split as before, without classifying anything.

Refused before any tier is called: a body over the limit (413), a JSON body that is not an
object or whose `model` is not a string (400), a request without a model when the router serves
several (400), a model no QuantizedModel serves (404), a path vLLM does not serve (404), a
method the path is not served with (405).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quantrollout.api.status import TrafficBackend, TrafficStatus

from .asgi import (
    BodyTooLargeError,
    ClientGoneError,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    send_error,
    send_json,
)
from .call import Call, Route, Tier
from .class_split import (
    ClassDecision,
    ClassTable,
    class_table,
    decide_mixed,
    describe,
    is_mixed,
)
from .classify import CLASS_HEADER, classify
from .endpoints import Endpoint, find
from .metrics import UNCLASSIFIED, RouterMetrics
from .pool import Upstreams
from .proxy import Proxy
from .requests import Refused, Request, choose_model, parse_request
from .routes import ModelTraffic, RouteTable, changed, upstream_url
from .settings import RouterSettings
from .shadow import Shadows
from .source import ConfigSource
from .split import choose_bucket, decide, mirror_draws
from .upstream import request_headers

log = logging.getLogger(__name__)


class RouterApp:
    """The router. `startup()`/`shutdown()` run from the ASGI lifespan, or by hand in tests."""

    def __init__(
        self,
        source: ConfigSource,
        settings: RouterSettings | None = None,
        metrics: RouterMetrics | None = None,
        rng: random.Random | None = None,
        announce_reloads: bool = True,
    ) -> None:
        self.source = source
        self.settings = settings or RouterSettings()
        self.metrics = metrics or RouterMetrics()
        self._rng = rng
        self._upstreams: Upstreams | None = None
        self._proxy: Proxy | None = None
        self.shadows: Shadows | None = None
        self._source_task: asyncio.Task[None] | None = None
        # Each mixed model's split, read once per route-table change (id -> the traffic it was
        # read from, kept so the id cannot be reused while cached, and its split).
        self._class_tables: dict[int, tuple[TrafficStatus, ClassTable]] = {}
        if announce_reloads:  # else a supervisor does, once every worker has the change
            source.subscribe(self._reloaded)

    async def startup(self) -> None:
        s = self.settings
        self._upstreams = Upstreams(s)
        self.shadows = Shadows(self._upstreams, s.max_shadow_inflight, s.shadow_compare_timeout)
        self._proxy = Proxy(
            self._upstreams, self.shadows, s.max_inspect_bytes, s.retry_after_seconds
        )
        self._source_task = asyncio.create_task(self.source.run(), name="router-config-source")

    async def shutdown(self) -> None:
        if self._source_task is not None:
            self._source_task.cancel()
            await asyncio.gather(self._source_task, return_exceptions=True)
        if self.shadows is not None:
            await self.shadows.close()
        if self._upstreams is not None:
            await self._upstreams.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as err:
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        found = find(path)
        if found is not None:
            endpoint = found[1]
            if method != endpoint.method and not (method == "HEAD" and endpoint.method == "GET"):
                await _not_allowed(send, endpoint.method)
                return
            await self._forward(scope, receive, send, endpoint)
            return
        get = {"/v1/models": self._models, "/health": self._health, "/metrics": self._metrics}.get(
            path
        )
        if get is None:
            await send_error(send, 404, f"no such endpoint: {path}", "not_found")
        elif method not in ("GET", "HEAD"):
            await _not_allowed(send, "GET")
        else:
            await get(send)

    @property
    def proxy(self) -> Proxy:
        assert self._proxy is not None, "startup() was not run"
        return self._proxy

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint
    ) -> None:
        limit = self.settings.max_body_bytes
        try:
            body = await read_body(scope, receive, limit)
        except BodyTooLargeError:
            message = (
                f"the request body is larger than the router's limit of {limit} bytes "
                "(router setting --max-body-bytes, Helm value router.maxBodyBytes)"
            )
            await send_error(send, 413, message, "invalid_request_error", "request_too_large")
            return
        except ClientGoneError:
            return
        route = self.plan(scope, body, endpoint)
        if isinstance(route, Refused):
            await _refuse(send, route)
            return
        await self.proxy.forward(receive, send, route)

    def plan(self, scope: Scope, body: bytes, endpoint: Endpoint) -> Route | Refused:
        """Where a request (its body read whole) goes, or why it is refused. Refusing has no
        side effect; a Route is to be followed: a mixed model's fallback class is counted."""
        content_type = header(scope, b"content-type") or b""
        query = scope.get("query_string", b"")
        request = parse_request(body, endpoint.body, content_type.decode("latin-1"), query)
        if isinstance(request, Refused):
            return request
        table = self.source.table()
        served = choose_model(request.model, table.keys())
        if isinstance(served, Refused):
            return served
        return self._route(scope, table[served], body, request, endpoint)

    def _route(
        self,
        scope: Scope,
        route: ModelTraffic,
        body: bytes,
        request: Request,
        endpoint: Endpoint,
    ) -> Route:
        traffic = route.traffic
        sticky = (
            header(scope, traffic.sticky_header.lower().encode()) if traffic.sticky_header else None
        )
        sticky_key = sticky.decode("latin-1") if sticky else None
        call = _call(scope, body, request, endpoint)
        if is_mixed(traffic):
            return self._route_mixed(scope, route, request, call, sticky_key)
        decision = decide(traffic, sticky_key, self._rng, self.settings.calibration_percent)
        baseline = self._tier(route, traffic.baseline)
        target = self._tier(route, traffic.target) if traffic.target else None
        if decision.live_on_target and target is not None:
            return Route(call, target, baseline)
        mirrored = decision.mirrored and endpoint.generates and target is not None
        return Route(
            call,
            baseline,
            None,
            (target,) if mirrored and target is not None else (),
            baseline if mirrored and decision.calibrated else None,
        )

    def _route_mixed(
        self,
        scope: Scope,
        route: ModelTraffic,
        request: Request,
        call: Call,
        sticky_key: str | None,
    ) -> Route:
        """A request to a mixed model: classified, then split by its class's route."""
        traffic = route.traffic
        cls, table, decision = self._decide_class(traffic, request, scope, sticky_key)
        if decision.fallback is not None:
            self.metrics.class_fallback(route.namespace, route.name, cls, decision.fallback)
        baseline = self._tier(route, traffic.baseline, cls)
        if decision.tier != traffic.baseline.tier:
            live = self._tier(route, table.targets[decision.tier], cls)
            return Route(call, live, baseline)
        mirrored, calibrated = (
            mirror_draws(traffic.mirror_percent, self.settings.calibration_percent, self._rng)
            if call.inspected
            else (False, False)
        )
        shadows = tuple(self._tier(route, b, cls) for b in table.mirrored) if mirrored else ()
        calibration = baseline if shadows and calibrated else None
        return Route(call, baseline, None, shadows, calibration)

    def _decide_class(
        self, traffic: TrafficStatus, request: Request, scope: Scope, sticky_key: str | None
    ) -> tuple[str, ClassTable, ClassDecision]:
        """The whole per-request decision for a mixed model: its class, its sticky bucket, its
        tier (what hack/bench/mixed_precision.py times as `decide-us`)."""
        table = self._class_table(traffic)
        named = header(scope, CLASS_HEADER.encode())
        cls = classify(request.parsed or {}, named.decode("latin-1") if named else None)
        bucket = choose_bucket(traffic.rollout_id, sticky_key, self._rng)
        return cls, table, decide_mixed(table, cls, bucket, traffic.baseline.tier)

    def _class_table(self, traffic: TrafficStatus) -> ClassTable:
        cached = self._class_tables.get(id(traffic))
        if cached is not None and cached[0] is traffic:
            return cached[1]
        if len(self._class_tables) > 64:  # tables of route tables since replaced
            self._class_tables.clear()
        table = class_table(traffic)
        self._class_tables[id(traffic)] = (traffic, table)
        return table

    def _tier(self, route: ModelTraffic, backend: TrafficBackend, cls: str = UNCLASSIFIED) -> Tier:
        return Tier(
            backend.tier,
            upstream_url(route.namespace, backend, self.settings.upstreams),
            self.metrics.tier(route.namespace, route.name, backend.tier, cls),
        )

    async def _models(self, send: Send) -> None:
        data = [
            {
                "id": served,
                "object": "model",
                "created": _epoch(m.created),
                "owned_by": f"{m.namespace}/{m.name}",
            }
            for served, m in sorted(self.source.table().items())
        ]
        await send_json(send, 200, {"object": "list", "data": data})

    async def _health(self, send: Send) -> None:
        synced = self.source.synced
        status: dict[str, object] = {
            "status": "ok" if synced else "loading",
            "models": len(self.source.table()),
        }
        generation = getattr(self.source, "generation", None)
        if generation is not None:  # a worker process (`workers`): which table, in which process
            status.update(generation=generation, pid=os.getpid())
        await send_json(send, 200 if synced else 503, status)

    async def _metrics(self, send: Send) -> None:
        body = generate_latest(self.metrics.exposition())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _reloaded(self, old: RouteTable, new: RouteTable) -> None:
        for model in changed(old, new):
            t = model.traffic
            tier = t.target.tier if t.target else t.baseline.tier
            self.metrics.tier(model.namespace, model.name, tier).reloads.inc()
            log.info(
                "traffic of %s/%s (%s): rollout %s, %s", model.namespace, model.name,
                t.served_model, t.rollout_id, describe(t),
            )  # fmt: skip
        for served in sorted(old.keys() - new.keys()):
            log.info("model %r is no longer served", served)


def _call(scope: Scope, body: bytes, request: Request, endpoint: Endpoint) -> Call:
    query = scope.get("query_string", b"")
    return Call(
        path=scope["path"] + ("?" + query.decode("latin-1") if query else ""),
        body=body,
        headers=request_headers(scope["headers"]),
        streamed=request.streamed,
        sampling=request.sampling,
        inspected=endpoint.generates,
        method=endpoint.method.encode(),
    )


def _epoch(timestamp: str) -> int:
    try:
        return int(datetime.fromisoformat(timestamp).timestamp())
    except ValueError:
        return 0


async def _refuse(send: Send, refused: Refused) -> None:
    await send_error(
        send, refused.status, refused.message, refused.kind, refused.code, param=refused.param
    )


async def _not_allowed(send: Send, allowed: str) -> None:
    await send_error(
        send,
        405,
        f"method not allowed; use {allowed}",
        "invalid_request_error",
        headers=[(b"allow", allowed.encode())],
    )
