"""The route table from the Kubernetes API: list, then watch, the QuantizedModels (in one
namespace or all) and keep `servedModel -> (namespace, name, status.traffic)` current.

Why a watch and not a mounted file: the kubelet refreshes a mounted ConfigMap only every minute
or so, far too slow for a rollback; a watch event arrives within milliseconds of the operator's
write. The watch runs on the router's event loop (an async HTTP stream), so nothing blocks
requests. Credentials and TLS come from the official client's config loaders (in-cluster first,
else the kubeconfig); the HTTP is httpx, like the rest of the router.

When a watch ends (the server ends each after a minute) or goes quiet for longer than that,
the source resumes it from the last resourceVersion it saw (bookmarks keep that fresh); when
the server says that version is gone (410) it lists again at once; on any other error it lists
again after a backoff (0.5 s doubling to 10 s), keeping the last table meanwhile: a router that
loses the API server keeps routing as it was told last.

A model whose `status.traffic` is missing is not routed. One whose `status.traffic` stops
validating keeps its last valid traffic (and a warning is logged): a bad write must not turn a
served model into 404s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.api.status import TrafficStatus

from .routes import ModelTraffic
from .source import TablePublisher

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.5, 10.0


class GoneError(Exception):
    """The resourceVersion we asked to watch from is too old (HTTP 410): list again."""


@dataclass(frozen=True)
class KubeEndpoint:
    """Where the API server is and how to talk to it."""

    host: str  # e.g. https://10.96.0.1:443
    ssl_context: ssl.SSLContext
    authorization: Callable[[], str | None]  # the Authorization header, refreshed per call

    @classmethod
    def from_configuration(cls, cfg: Any) -> KubeEndpoint:
        """From a `kubernetes.client.Configuration` the official loaders filled in."""
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

        def authorization() -> str | None:
            # As the official client asks for it; this also runs the refresh hook, so rotated
            # in-cluster tokens and expiring exec-plugin tokens are picked up.
            value = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
            return str(value) if value else None

        return cls(str(cfg.host).rstrip("/"), context, authorization)

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> KubeEndpoint:
        """In-cluster credentials in a pod, else `kubeconfig` (or KUBECONFIG, ~/.kube/config)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
        return cls.from_configuration(cfg)


def model_traffic(obj: dict[str, Any]) -> ModelTraffic | None:
    """One QuantizedModel as the router routes it; None if it has no traffic yet.

    Raises ValidationError when `status.traffic` is present but invalid."""
    raw = (obj.get("status") or {}).get("traffic")
    if not raw:
        return None
    meta = obj["metadata"]
    return ModelTraffic(
        namespace=meta["namespace"],
        name=meta["name"],
        created=meta.get("creationTimestamp") or "",
        traffic=TrafficStatus.model_validate(raw),
    )


class KubeConfigSource(TablePublisher):
    """Lists and watches QuantizedModels; see the module doc."""

    def __init__(
        self, endpoint: KubeEndpoint, namespace: str | None = None, watch_timeout: int = 60
    ) -> None:
        super().__init__()
        self._endpoint = endpoint
        self._namespace = namespace
        self._watch_timeout = watch_timeout
        self._models: dict[tuple[str, str], ModelTraffic] = {}
        self._version = ""  # the last resourceVersion seen: where a watch resumes
        self._synced = False
        self.relists = 0  # how many times the source listed (observability and tests)

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def _path(self) -> str:
        scope = f"/namespaces/{self._namespace}" if self._namespace else ""
        return f"/apis/{GROUP}/{VERSION}{scope}/{PLURAL}"

    async def run(self) -> None:
        # The server ends each watch after `watch_timeout` and it is resumed from the last
        # version (cheap). The read timeout outlasts that by a little, so a connection that died
        # without a word (no FIN) is noticed within about a minute too: a rollback written
        # meanwhile must not wait for the kernel's keep-alive, which can take hours.
        timeout = httpx.Timeout(10.0, read=self._watch_timeout + 15.0)
        async with httpx.AsyncClient(
            base_url=self._endpoint.host, verify=self._endpoint.ssl_context, timeout=timeout,
            trust_env=False,
        ) as http:  # fmt: skip
            delay = BACKOFF_MIN
            while True:
                try:
                    self._version = await self._list(http)
                    delay = BACKOFF_MIN
                    while True:
                        try:
                            await self._watch(http)
                        except httpx.ReadTimeout:
                            log.info("watch of QuantizedModels went quiet; resuming it")
                except GoneError:
                    log.info("watch of QuantizedModels expired (410); listing again")
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
                    log.warning(
                        "listing/watching QuantizedModels failed (%s: %s); retrying in %.1fs",
                        type(err).__name__, err, delay,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)

    def _headers(self) -> dict[str, str]:
        auth = self._endpoint.authorization()
        return {"Authorization": auth} if auth else {}

    async def _list(self, http: httpx.AsyncClient) -> str:
        response = await http.get(self._path, headers=self._headers())
        response.raise_for_status()
        body = response.json()
        self.relists += 1
        models: dict[tuple[str, str], ModelTraffic] = {}
        for obj in body.get("items") or []:
            self._keep(models, obj)
        self._models = models
        self.publish(models.values())
        self._synced = True
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, http: httpx.AsyncClient) -> None:
        """Applies watch events from `self._version` on, until the server ends the watch."""
        params = {
            "watch": "true", "resourceVersion": self._version, "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._watch_timeout),
        }  # fmt: skip
        async with http.stream("GET", self._path, params=params, headers=self._headers()) as resp:
            if resp.status_code == 410:
                raise GoneError
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise GoneError
                    raise ValueError(f"watch error: {obj.get('message', obj)}")
                self._version = str(obj["metadata"]["resourceVersion"])
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    meta = obj["metadata"]
                    self._models.pop((meta["namespace"], meta["name"]), None)
                else:
                    self._keep(self._models, obj)
                self.publish(self._models.values())

    def _keep(self, models: dict[tuple[str, str], ModelTraffic], obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        try:
            traffic = model_traffic(obj)
        except ValidationError as err:
            previous = self._models.get(key)
            log.warning(
                "%s/%s: status.traffic is invalid, %s: %s", *key,
                "keeping its last valid traffic" if previous else "not routing it", err,
            )  # fmt: skip
            traffic = previous
        if traffic is None:
            models.pop(key, None)
        else:
            models[key] = traffic
