"""The router's Kubernetes config source against the real local API server: it lists and watches
QuantizedModels and keeps `servedModel -> (namespace, name, status.traffic)` current; and the
router picks weight changes written there without a restart."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.stack import Stack
from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.router.app import RouterApp
from quantrollout.router.kube_source import KubeConfigSource, KubeEndpoint
from quantrollout.router.server import RunningRouter
from quantrollout.router.settings import RouterSettings
from quantrollout.router.source import ConfigSource
from vllmsim import Simulator

from .support import example


def model(name: str, served: str) -> dict[str, Any]:
    obj = example()
    obj["metadata"] = {"name": name}
    obj["spec"]["model"] = served
    # Too little GPU memory for the baseline (an explicit shape, since the served name here is no
    # preset): an operator running in the same session refuses to deploy (InsufficientGPUMemory)
    # and so never starts a rollout that would write traffic over what these tests write.
    obj["spec"]["serving"]["gpu"]["memoryGiB"] = 8
    obj["spec"]["modelShape"] = {"parametersB": 8, "layers": 32, "kvHeads": 8, "headDim": 128}
    return obj


def traffic(served: str, weight: int, name: str = "m", rollout: str = "r1") -> dict[str, Any]:
    return {
        "rolloutId": rollout,
        "servedModel": served,
        "targetWeight": weight,
        "mirrorPercent": 0,
        "stickyHeader": "x-user-id",
        "baseline": {"tier": "fp16", "service": f"{name}-fp16", "port": 8000},
        "target": {"tier": "int4-awq", "service": f"{name}-int4-awq", "port": 8000},
    }


class Models:
    """QuantizedModels of one namespace, written from a thread (the client is synchronous)."""

    def __init__(self, kube: ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(kube)
        self.namespace = namespace

    async def create(self, obj: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.api.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, obj
        )

    async def set_traffic(self, name: str, value: dict[str, Any] | None) -> None:
        await asyncio.to_thread(
            self.api.patch_namespaced_custom_object_status,
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": {"traffic": value}},
        )  # fmt: skip

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(
            self.api.delete_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name
        )


@pytest.fixture
def models(kube: ApiClient, crd: str, namespace: str) -> Models:
    return Models(kube, namespace)


@asynccontextmanager
async def running(source: KubeConfigSource) -> AsyncIterator[KubeConfigSource]:
    task = asyncio.create_task(source.run())
    try:
        await until("the first list", lambda: source.synced)
        yield source
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(what: str, check: Callable[[], object], limit: float = 10) -> float:
    """Waits for `check()` to be truthy; returns how long that took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            pytest.fail(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def served(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def weight(source: ConfigSource, name: str) -> int | None:
    route = source.table().get(name)
    return route.traffic.target_weight if route else None


async def test_the_table_follows_status_traffic(
    stack: Stack, models: Models, namespace: str
) -> None:
    name = served("llama")
    endpoint = KubeEndpoint.load(str(stack.controlplane.kubeconfig))
    async with running(KubeConfigSource(endpoint, namespace=namespace)) as source:
        await models.create(model("llama3-8b", name))
        await asyncio.sleep(0.3)
        assert name not in source.table()  # no traffic in its status yet: not routed

        await models.set_traffic("llama3-8b", traffic(name, 0, "llama3-8b"))
        await until("the model in the table", lambda: weight(source, name) == 0)
        route = source.table()[name]
        assert (route.namespace, route.name) == (namespace, "llama3-8b")
        assert route.traffic.baseline.service == "llama3-8b-fp16"
        assert route.created  # the creation time, for who claimed a name first

        await models.set_traffic("llama3-8b", traffic(name, 25, "llama3-8b"))
        took = await until("weight 25", lambda: weight(source, name) == 25)
        assert took < 2.0, f"a weight change took {took:.2f}s to reach the router"

        await models.set_traffic("llama3-8b", None)
        await until("the model unrouted", lambda: name not in source.table())
        await models.set_traffic("llama3-8b", traffic(name, 50, "llama3-8b"))
        await until("weight 50", lambda: weight(source, name) == 50)

        await models.delete("llama3-8b")
        await until("the model gone", lambda: name not in source.table())
        assert source.relists == 1  # all of that through one watch


async def test_the_oldest_claimant_keeps_a_served_name(
    stack: Stack, models: Models, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = served("shared")
    await models.create(model("first", name))
    await models.set_traffic("first", traffic(name, 10, "first"))
    await asyncio.sleep(1.1)  # creation timestamps have a resolution of one second
    await models.create(model("second", name))
    await models.set_traffic("second", traffic(name, 90, "second"))
    endpoint = KubeEndpoint.load(str(stack.controlplane.kubeconfig))
    async with running(KubeConfigSource(endpoint)) as source:  # all namespaces
        await until("the served name", lambda: name in source.table())
        assert source.table()[name].name == "first"
        assert any("claimed by several QuantizedModels" in r.message for r in caplog.records)
        await models.delete("first")
        await until("the second model", lambda: weight(source, name) == 90)
        assert source.table()[name].name == "second"


class StaleFirstList(KubeConfigSource):
    """Watches from a long-gone resourceVersion after its first list, as a router would after a
    long disconnection: the API server answers 410 Gone."""

    async def _list(self, http: httpx.AsyncClient) -> str:
        version = await super()._list(http)
        return "1" if self.relists == 1 else version


async def test_a_410_relists(
    stack: Stack, models: Models, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quantrollout.router")
    name = served("gone")
    endpoint = KubeEndpoint.load(str(stack.controlplane.kubeconfig))
    async with running(StaleFirstList(endpoint, namespace=namespace)) as source:
        await until("a second list", lambda: source.relists >= 2)
        assert any("(410); listing again" in r.message for r in caplog.records)
        assert not any(r.levelname == "WARNING" for r in caplog.records)  # no error path
        await models.create(model("m", name))
        await models.set_traffic("m", traffic(name, 75))
        await until("the model", lambda: weight(source, name) == 75)


async def test_an_unreachable_api_server_is_retried(namespace: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"  # nobody listens there
    source = KubeConfigSource(KubeEndpoint.from_configuration(cfg), namespace=namespace)
    task = asyncio.create_task(source.run())
    await asyncio.sleep(0.8)
    assert not task.done()  # still retrying, with backoff
    assert not source.synced
    assert dict(source.table()) == {}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_least_privilege(
    stack: Stack, kube: ApiClient, models: Models, namespace: str
) -> None:
    """Get, list and watch on quantizedmodels in its namespace is all the router needs."""
    rbac, core = client.RbacAuthorizationV1Api(kube), client.CoreV1Api(kube)
    await asyncio.to_thread(
        core.create_namespaced_service_account, namespace, {"metadata": {"name": "router"}}
    )
    role = {
        "metadata": {"name": "router"},
        "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]}],
    }
    await asyncio.to_thread(rbac.create_namespaced_role, namespace, role)
    binding = {
        "metadata": {"name": "router"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "router"},
        "subjects": [{"kind": "ServiceAccount", "name": "router", "namespace": namespace}],
    }
    await asyncio.to_thread(rbac.create_namespaced_role_binding, namespace, binding)
    kubeconfig = await asyncio.to_thread(
        stack.controlplane.service_account_kubeconfig, namespace, "router"
    )
    name = served("sa")
    await models.create(model("m", name))
    await models.set_traffic("m", traffic(name, 5))
    async with running(
        KubeConfigSource(KubeEndpoint.load(str(kubeconfig)), namespace=namespace)
    ) as source:
        await until("the model", lambda: weight(source, name) == 5)


async def test_the_router_takes_weight_changes_from_the_api_without_a_restart(
    stack: Stack, models: Models, namespace: str
) -> None:
    name = served("live")
    await models.create(model("m", name))
    await models.set_traffic("m", traffic(name, 0))
    with Simulator(name, tier="fp16") as base, Simulator(name, tier="int4-awq") as target:
        settings = RouterSettings(
            upstreams={(namespace, "m-fp16"): base.url, (namespace, "m-int4-awq"): target.url}
        )
        endpoint = KubeEndpoint.load(str(stack.controlplane.kubeconfig))
        app = RouterApp(KubeConfigSource(endpoint, namespace=namespace), settings)
        async with RunningRouter(app) as router, httpx.AsyncClient(base_url=router.url) as http:
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}

            async def tier() -> str:
                resp = await http.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200, resp.text
                return resp.headers["x-quantrollout-tier"]

            await until("the route", lambda: name in app.source.table())
            assert (await http.get("/health")).status_code == 200
            assert {await tier() for _ in range(5)} == {"fp16"}
            await models.set_traffic("m", traffic(name, 100))
            await until("weight 100", lambda: weight(app.source, name) == 100)
            assert {await tier() for _ in range(5)} == {"int4-awq"}
            models_seen = (await http.get("/v1/models")).json()["data"]
            assert [m["id"] for m in models_seen] == [name]


async def test_the_command_serves_what_the_api_says(
    stack: Stack, models: Models, namespace: str, tmp_path: Path
) -> None:
    """`quantrollout router` as a process: watches the API with a kubeconfig, serves the model."""
    name = served("cli")
    await models.create(model("m", name))
    await models.set_traffic("m", traffic(name, 0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "quantrollout"
    argv = [str(exe), "router", "-n", namespace, "--host", "127.0.0.1", "--port", str(port),
            "--kubeconfig", str(stack.controlplane.kubeconfig),
            "--upstream", f"{namespace}/m-fp16=http://127.0.0.1:9"]  # fmt: skip
    log = tmp_path / "router.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def listed() -> bool:
                try:
                    resp = await http.get("/v1/models")
                except httpx.TransportError:
                    return False
                return [m["id"] for m in resp.json()["data"]] == [name]

            deadline = time.monotonic() + 15
            while not await listed():
                assert proc.returncode is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.1)
            assert (await http.get("/health")).status_code == 200
            # The override points the baseline at a closed port: 503, with Retry-After.
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            resp = await http.post("/v1/chat/completions", json=body)
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "1"
            assert "quantrollout_router_config_reloads_total" in (await http.get("/metrics")).text
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 15) == 0, log.read_text()
    assert "traffic of" in log.read_text()  # the reload is logged


async def test_ended_watches_resume_without_listing_again(
    stack: Stack, models: Models, namespace: str
) -> None:
    name = served("resume")
    endpoint = KubeEndpoint.load(str(stack.controlplane.kubeconfig))
    async with running(KubeConfigSource(endpoint, namespace=namespace, watch_timeout=1)) as source:
        await asyncio.sleep(2.5)  # the server has ended two watches by now
        await models.create(model("m", name))
        await models.set_traffic("m", traffic(name, 40))
        await until("the model", lambda: weight(source, name) == 40)
        assert source.relists == 1


async def test_a_mixed_model_is_split_by_class_as_the_api_says(
    stack: Stack, models: Models, namespace: str
) -> None:
    """status.traffic.targets and .classes, as the operator writes them: through the CRD's
    schema, the watch and the router's class split, and changed without a restart."""
    name = served("mixed")
    await models.create(model("m", name))
    mixed = {
        **traffic(name, 0),
        "targets": [
            {"tier": "fp8", "service": "m-fp8", "port": 8000},
            {"tier": "int4-awq", "service": "m-int4-awq", "port": 8000},
        ],
        "classes": [
            {"class": "code", "tier": "fp8", "weight": 100, "rest": "fp16"},
            {"class": "chat-short", "tier": "int4-awq", "weight": 100, "rest": "fp16"},
        ],
    }
    del mixed["target"]
    await models.set_traffic("m", mixed)
    with (
        Simulator(name, tier="fp16") as base,
        Simulator(name, tier="fp8") as fp8,
        Simulator(name, tier="int4-awq") as int4,
    ):
        upstreams = {(namespace, f"m-{s.tier}"): s.url for s in (base, fp8, int4)}
        endpoint = KubeEndpoint.load(str(stack.controlplane.kubeconfig))
        app = RouterApp(
            KubeConfigSource(endpoint, namespace=namespace), RouterSettings(upstreams=upstreams)
        )
        async with RunningRouter(app) as router, httpx.AsyncClient(base_url=router.url) as http:

            async def tier(content: str) -> str:
                body = {"model": name, "messages": [{"role": "user", "content": content}]}
                resp = await http.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200, resp.text
                return resp.headers["x-quantrollout-tier"]

            code = "```python\nprint(1)\n```"
            await until("the route", lambda: name in app.source.table())
            assert {await tier(code) for _ in range(3)} == {"fp8"}
            assert {await tier("hi") for _ in range(3)} == {"int4-awq"}
            assert await tier("Solve 3 + 4 = x and prove it") == "fp16"  # math: no route
            mixed["classes"][0] = {
                "class": "code",
                "tier": "int4-awq",
                "weight": 100,
                "rest": "fp8",
            }
            await models.set_traffic("m", mixed)

            def moved() -> bool:
                classes = app.source.table()[name].traffic.classes or []
                return any(c.class_ == "code" and c.tier == "int4-awq" for c in classes)

            await until("code moved to int4-awq", moved)
            assert {await tier(code) for _ in range(3)} == {"int4-awq"}
            text = (await http.get("/metrics")).text
            assert 'quantrollout_router_class_fallbacks_total{class="math"' in text
