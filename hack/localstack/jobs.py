"""Plays the kubelet for preflight Job pods on the local stack's KWOK nodes.

What is real: the operator creates the Job; the Job controller creates its pod; the scheduler
places it on a KWOK node (whose stages, `kwok-stages.yaml`, leave preflight pods to this module);
the containers' commands (`quantrollout preflight artifact ...`, then `benchmark ...`)
run, unchanged, as host processes from the project's own virtualenv, against real servers on
loopback; their exit codes and the JSON each writes to its termination-log path go into the
pod's status as the kubelet writes them (`terminated.exitCode`, `.message`); the Job controller
then marks the Job Complete or Failed, and the operator reads the result from the pod.

What is simulated, and how: there is no container runtime, so
- the image is not pulled (the command runs from the venv whatever the image says);
- a tier Service's DNS name (`http://NAME.NAMESPACE.svc:8000`) is rewritten to the loopback URL
  of the server standing for it (a vLLM simulator), as the router's `--upstream` does;
- `/dev/termination-log` is a file per container; a mounted ConfigMap (the quality probe's
  prompts) is written to a directory and its mount path rewritten; env values and `envFrom`
  come from the pod spec, with `secretKeyRef` / `configMapKeyRef` read from the API.
"""

from __future__ import annotations

import base64
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .kubeapi import api_client

PREFLIGHT_SELECTOR = "app.kubernetes.io/component=preflight"


class ConfigError(Exception):
    """The kubelet cannot start the container: its environment names what does not exist."""


TERMINATION_LOG = "/dev/termination-log"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PreflightRunner:
    """Runs every preflight pod the scheduler placed on a node, once, in a background thread."""

    def __init__(
        self,
        kubeconfig: Path,
        upstreams: Callable[[], Mapping[tuple[str, str], str]],
        workdir: Path,
        env: Mapping[str, str] | None = None,
        poll_s: float = 0.3,
    ) -> None:
        self.api = api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.upstreams = upstreams  # now: (namespace, service) -> http://127.0.0.1:PORT
        self.workdir = workdir
        self.env = dict(env or {})  # added to every command's environment (e.g. HF_ENDPOINT)
        self.poll_s = poll_s
        self.done: set[str] = set()  # pod uids run
        self.runs: list[dict[str, Any]] = []  # what ran: pod, container, argv, exit code, seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PreflightRunner:
        self._thread = threading.Thread(target=self._loop, name="preflight-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.api.close()  # type: ignore[no-untyped-call]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.core.list_pod_for_all_namespaces(label_selector=PREFLIGHT_SELECTOR)
                for pod in self.api.sanitize_for_serialization(listed)["items"]:  # type: ignore[no-untyped-call]
                    meta, status = pod["metadata"], pod.get("status") or {}
                    placed = pod["spec"].get("nodeName") and status.get("phase") == "Pending"
                    if meta["uid"] in self.done or not placed or meta.get("deletionTimestamp"):
                        continue
                    self.done.add(meta["uid"])
                    self.run_pod(pod)
            except (ApiException, OSError) as err:
                print(f"preflight runner: {err!r:.300}", file=sys.stderr)
            self._stop.wait(self.poll_s)

    # -- one pod

    def run_pod(self, pod: dict[str, Any]) -> None:
        ns = pod["metadata"]["namespace"]
        spec = pod["spec"]
        workdir = Path(tempfile.mkdtemp(prefix=pod["metadata"]["name"] + "-", dir=self.workdir))
        mounts = self._volumes(ns, spec.get("volumes") or [], workdir)
        init = spec.get("initContainers") or []
        statuses: list[dict[str, Any]] = []
        failed = False
        started_pod = _now()
        for container in [*init, *spec["containers"]]:
            if failed:
                break
            started = _now()
            try:
                code, message = self._run(ns, container, mounts, workdir, pod["metadata"]["name"])
            except ConfigError as err:
                # As the kubelet: the container waits (the Job's deadline ends it), said why.
                self._waiting(pod, container["name"], "CreateContainerConfigError", str(err))
                return
            failed = code != 0
            statuses.append({
                "name": container["name"], "image": container["image"], "ready": False,
                "restartCount": 0, "imageID": "", "containerID": f"host://{container['name']}",
                "state": {"terminated": {
                    "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                    "message": message, "startedAt": started, "finishedAt": _now()}},
            })  # fmt: skip
        names = [c["name"] for c in init]
        init_st = [s for s in statuses if s["name"] in names]
        main_st = [s for s in statuses if s["name"] not in names]
        if not main_st:  # the main container never started: an init container failed
            main_st = [{"name": c["name"], "image": c["image"], "ready": False, "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}}}
                       for c in spec["containers"]]  # fmt: skip
        now = _now()
        status = {
            "phase": "Failed" if failed else "Succeeded",
            "startTime": started_pod,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            ],
            "initContainerStatuses": init_st,
            "containerStatuses": main_st,
        }  # fmt: skip
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], ns, {"status": status})

    def _waiting(self, pod: dict[str, Any], name: str, reason: str, message: str) -> None:
        spec = pod["spec"]
        init = [c["name"] for c in spec.get("initContainers") or []]
        field = "initContainerStatuses" if name in init else "containerStatuses"
        listed = (spec.get("initContainers") or []) if name in init else spec["containers"]
        statuses = [
            {"name": c["name"], "image": c["image"], "ready": False, "restartCount": 0,
             "state": {"waiting": {"reason": reason, "message": message} if c["name"] == name
                       else {"reason": "PodInitializing"}}}
            for c in listed
        ]  # fmt: skip
        status = {"phase": "Pending", "startTime": _now(), field: statuses}
        self.core.patch_namespaced_pod_status(
            pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": status}
        )

    def _run(
        self,
        ns: str,
        container: dict[str, Any],
        mounts: dict[str, Path],
        workdir: Path,
        pod: str,
    ) -> tuple[int, str]:
        log = workdir / f"{container['name']}.termination-log"
        argv = [str(Path(sys.executable).parent / "quantrollout")] + [
            self._arg(ns, a, log, container, mounts) for a in container.get("args") or []
        ]
        own = self._env(ns, container)
        if isinstance(own, str):
            raise ConfigError(own)
        env = {**os.environ, **self.env, **own}
        env.pop("KUBECONFIG", None)  # a pod has no admin kubeconfig
        began = time.monotonic()
        with (workdir / f"{container['name']}.log").open("wb") as out:
            code = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        self.runs.append({"pod": pod, "namespace": ns, "container": container["name"],
                          "argv": argv, "exitCode": code,
                          "seconds": time.monotonic() - began})  # fmt: skip
        message = log.read_text()[:4096] if log.exists() else ""
        return code, message

    def _arg(
        self, ns: str, arg: str, log: Path, container: dict[str, Any], mounts: dict[str, Path]
    ) -> str:
        if arg == (container.get("terminationMessagePath") or TERMINATION_LOG):
            return str(log)
        for (svc_ns, svc), url in self.upstreams().items():
            for port in ("8000", "80"):
                host = f"http://{svc}.{svc_ns}.svc:{port}"
                if arg.startswith(host):
                    return url + arg[len(host) :]
        for mount in container.get("volumeMounts") or []:
            path = mounts.get(mount["name"])
            if path is not None and arg.startswith(mount["mountPath"]):
                return str(path) + arg[len(mount["mountPath"]) :]
        return arg

    def _volumes(self, ns: str, volumes: list[dict[str, Any]], workdir: Path) -> dict[str, Path]:
        """ConfigMap volumes written out as directories (one file per key)."""
        out = {}
        for v in volumes:
            ref = v.get("configMap")
            if ref is None:
                continue
            cm = self.core.read_namespaced_config_map(ref["name"], ns)
            d = workdir / f"volume-{v['name']}"
            d.mkdir()
            for key, value in (cm.data or {}).items():
                (d / key).write_text(value)
            out[v["name"]] = d
        return out

    def _data(self, ns: str, kind: str, name: str) -> dict[str, str] | None:
        """A Secret's (decoded) or ConfigMap's data; None when it does not exist."""
        try:
            if kind == "secret":
                s = self.core.read_namespaced_secret(name, ns)
                return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
            return dict(self.core.read_namespaced_config_map(name, ns).data or {})
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _env(self, ns: str, container: dict[str, Any]) -> dict[str, str] | str:
        """The container's environment, or, as the kubelet says when it cannot build it
        (CreateContainerConfigError), why not: a Secret or key missing and not optional."""
        out: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            kind = "secret" if "secretRef" in src else "configmap"
            ref = src.get("secretRef") or src.get("configMapRef") or {}
            data = self._data(ns, kind, ref["name"])
            if data is None and not ref.get("optional"):
                return f'{kind} "{ref["name"]}" not found'
            out.update(data or {})
        for e in container.get("env") or []:
            if "value" in e:
                out[e["name"]] = e["value"]
                continue
            source = e.get("valueFrom") or {}
            kind = "secret" if "secretKeyRef" in source else "configmap"
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
            if ref is None:
                continue
            data = self._data(ns, kind, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                return f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}"
            out[e["name"]] = data[ref["key"]]
        return out
