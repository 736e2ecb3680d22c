"""When a dependency fails mid-rollout, on the real stack: Prometheus slow (a real loopback proxy
in front of the real Prometheus holds its answers), the kube-apiserver stopped and started again
on the same etcd, real 409 conflicts on the status write, and the target tier's pods crash-looping
(their status set by hand, as a kubelet would report it; KWOK leaves it alone). Each says what
the operator does, and that nothing is promoted while the dependency is failing.

Prometheus fully down is `test_rollout.test_prometheus_outage_never_promotes`; killing the
operator itself is `test_rollout.test_killing_the_operator_mid_ab_flips_no_traffic`.
"""

from __future__ import annotations

import datetime
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from localstack.lab import Lab, OperatorProcess
from localstack.load import Load
from localstack.stack import Stack
from quantrollout.analysis.batch import SAMPLES, batched_query
from quantrollout.analysis.prometheus import PrometheusProvider
from quantrollout.analysis.rules import default_window
from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.api.spec import Analysis
from quantrollout.manifests.vllm import MODEL_LABEL, TIER_LABEL

from .support import Models, wait_for
from .test_rollout import SERVED, model, start, status

NAME, BASELINE, TARGET = "llama3-8b", "fp16", "int4-awq"
Lab_ = tuple[Lab, dict[str, Any]]


class PrometheusProxy:
    """A real HTTP proxy on loopback in front of Prometheus that can answer late (`delay_s`),
    answer 503 (`failing`), or run a hook before forwarding one chosen query."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_s = 0.0
        self.failing = False
        self.answered = 0
        self._hook: tuple[str, Callable[[], None]] | None = None
        self.hook_fired = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> PrometheusProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def arm(self, query: str, hook: Callable[[], None]) -> None:
        """From the next request for exactly `query` on: run `hook` first, then answer normally."""
        with self._lock:
            self._hook = (query, hook)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else None
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        if body:
            params.update(urllib.parse.parse_qs(body.decode()))
        query = (params.get("query") or [""])[0]
        hook = None
        with self._lock:
            if self._hook and self._hook[0] == query:
                hook, self._hook, self.failing = self._hook[1], None, False
            delay, failing = self.delay_s, self.failing
        if hook:
            hook()
            self.hook_fired.set()
        time.sleep(delay)
        try:
            if failing:
                self._reply(req, 503, b"unavailable", "text/plain")
                return
            forward = urllib.request.Request(
                self.upstream + req.path, data=body, method=req.command
            )
            if body:
                forward.add_header("Content-Type", req.headers.get("Content-Type", ""))
            try:
                with urllib.request.urlopen(forward, timeout=30) as resp:
                    data, code, ctype = resp.read(), resp.status, resp.headers["Content-Type"]
            except urllib.error.HTTPError as err:
                data, code, ctype = err.read(), err.code, err.headers["Content-Type"]
            self._reply(req, code, data, ctype or "application/json")
            with self._lock:
                self.answered += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the operator gave up waiting (its timeout): exactly the point

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, code: int, data: bytes, ctype: str) -> None:
        req.send_response(code)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


@dataclass(frozen=True)
class Seen:
    phase: str | None
    stage: str | None
    step: int | None
    weight: int | None
    live: int | None  # status.traffic: what the router applies
    mirror: int | None
    stage_started_at: str | None
    target_ready: bool | None


class Watcher:
    """Polls the model's status in the background and keeps what it saw (nothing while the API is
    down)."""

    def __init__(self, models: Models) -> None:
        self.models, self.seen = models, list[Seen]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                s = status(self.models)
            except Exception:  # the API server is down: nothing to see
                s = None
            if s:
                traffic = s.get("traffic") or {}
                tiers = {t["name"]: t for t in s.get("tiers") or []}
                self.seen.append(
                    Seen(
                        s.get("phase"), s.get("stage"), s.get("step"), s.get("targetWeight"),
                        traffic.get("targetWeight"), traffic.get("mirrorPercent"),
                        s.get("stageStartedAt"), tiers.get(TARGET, {}).get("ready"),
                    )
                )  # fmt: skip
            time.sleep(0.05)


def promotions(kube: ApiClient, namespace: str) -> list[str]:
    events = client.CoreV1Api(kube).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={NAME}"
    )
    return sorted(e.message for e in events.items if e.reason == "Promoted")


def log_lines(operator: OperatorProcess, text: str) -> list[str]:
    """The operator's log lines (the session's operator is shared) that contain `text`."""
    return [ln for ln in operator.log.read_text(errors="replace").splitlines() if text in ln]


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def error_rate_only(prometheus_url: str | None = None) -> dict[str, Any]:
    """The rollout model judged by its error rate alone: what these tests break is a dependency,
    not latency (which a loaded machine can breach by itself); and two queries per evaluation
    (samples, error rate), so a slow Prometheus costs two timeouts, not six."""
    obj = model()
    obj["spec"]["rollout"]["analysis"]["rules"] = [{"name": "error-rate", "max": "5%"}]
    if prometheus_url:
        obj["spec"]["prometheus"] = {"url": prometheus_url}
    return obj


def test_a_slow_prometheus_is_inconclusive_and_never_promotes(
    kube: ApiClient, namespace: str, operator: OperatorProcess, lab: Lab_, stack: Stack
) -> None:
    the_lab, _ = lab
    assert the_lab.router is not None
    models = Models(kube, namespace)
    timeout = PrometheusProvider.timeout_s
    with PrometheusProxy(stack.prometheus.url) as proxy, Watcher(models) as watcher:
        proxy.delay_s = timeout + 2  # beyond the provider's timeout
        start(models, error_rate_only(proxy.url), the_lab.router.url)
        with Load(the_lab.router.url, SERVED, rate_per_s=20):

            def analysed_after(moment: str | None) -> dict[str, Any] | None:
                s = status(models)
                last = s.get("lastAnalysis") or {}
                return s if last and (moment is None or at(last["at"]) > at(moment)) else None

            first = wait_for("a first (slow) evaluation", lambda: analysed_after(None), 60)
            # The operator keeps ticking: another evaluation, again after a timeout.
            second = wait_for(
                "a second evaluation", lambda: analysed_after(first["lastAnalysis"]["at"]), 60
            )
            slow_until = len(watcher.seen)
            proxy.delay_s = 1.0  # slow, but under the timeout
            done = wait_for(
                "Succeeded", lambda: (s := status(models)).get("phase") == "Succeeded" and s, 120
            )
    for s in (first, second):
        assert s["lastAnalysis"]["verdict"] == "Inconclusive"
        reason = s["lastAnalysis"]["results"][0]["reason"]
        assert reason == f"prometheus at {proxy.url}: no answer within the {timeout:g}s timeout"
        assert (s["phase"], s["stage"], s["targetWeight"], s["traffic"]["targetWeight"]) == (
            "Progressing", "shadow", 0, 0,
        )  # fmt: skip
    # Held past the 3s shadow stage by the verdict alone.
    assert (at(second["lastAnalysis"]["at"]) - at(second["stageStartedAt"])).total_seconds() > 3
    assert {(s.stage, s.live) for s in watcher.seen[:slow_until] if s.stage} == {("shadow", 0)}
    assert (done["lastAnalysis"]["verdict"], done["targetWeight"]) == ("Pass", 100)
    assert proxy.answered > 0


def test_an_api_server_restart_mid_rollout_resumes_the_same_stage(
    kube: ApiClient, namespace: str, operator: OperatorProcess, lab: Lab_, stack: Stack
) -> None:
    the_lab, _ = lab
    assert the_lab.router is not None
    assert operator.proc is not None
    models = Models(kube, namespace)
    obj = error_rate_only()
    obj["spec"]["rollout"]["stages"][1]["duration"] = "5m"  # A/B outlasts any restart
    failed_passes = len(log_lines(operator, f"{namespace}/{NAME}: pass failed"))
    start(models, obj, the_lab.router.url)
    with Load(the_lab.router.url, SERVED, rate_per_s=20), Watcher(models) as watcher:
        before = wait_for("ab", lambda: (s := status(models)).get("stage") == "ab" and s, 60)
        stack.controlplane.stop_apiserver()
        try:
            # A few passes (1s interval) against an API that is not there.
            wait_for(
                "the model's runner to fail a pass",
                lambda: (
                    len(log_lines(operator, f"{namespace}/{NAME}: pass failed")) > failed_passes
                ),
            )
            assert not stack.controlplane.api_ready()
            assert operator.proc.poll() is None, "the operator exited during the API outage"
        finally:
            back = datetime.datetime.now(datetime.UTC)  # the API was down until at least now
            stack.controlplane.start_apiserver()
        # The operator reconnects by itself and evaluates again, in the same stage.
        after = wait_for(
            "an evaluation recorded after the restart",
            lambda: (
                (s := status(models)).get("lastAnalysis")
                and at(s["lastAnalysis"]["at"]) > back
                and s
            ),
            60,
        )
        # Then a promotion (asked for, so the test need not wait out A/B) and the rest.
        client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, NAME,
            {"metadata": {"annotations": {"quantrollout.io/action": "promote"}}},
        )  # fmt: skip
        done = wait_for(
            "Succeeded", lambda: (s := status(models)).get("phase") == "Succeeded" and s, 120
        )
    assert operator.proc.poll() is None
    # The same stage resumed: A/B at 10% with the same start, neither restarted nor skipped.
    assert (after["phase"], after["stage"], after["stageStartedAt"]) == (
        "Progressing", "ab", before["stageStartedAt"],
    )  # fmt: skip
    assert (after["targetWeight"], after["traffic"]["targetWeight"]) == (10, 10)
    # (The watcher polls every 50 ms and sees nothing while the API is down, so it may miss the
    # short A/B before the outage: whatever it saw of A/B must be this one start.)
    assert {s.stage_started_at for s in watcher.seen if s.stage == "ab"} <= {
        before["stageStartedAt"]
    }
    # Later stages started only once the API was back (nothing decided in the dark), in order.
    later = [s for s in watcher.seen if s.stage in ("gradual", "full")]
    assert later
    assert all(at(s.stage_started_at or "") > back for s in later)
    weights = [s.live for s in watcher.seen if s.live is not None]
    assert weights == sorted(weights)
    assert done["targetWeight"] == 100
    # One promotion per step, none twice.
    promoted = wait_for(
        "3 Promoted events", lambda: len(p := promotions(kube, namespace)) >= 3 and p
    )
    assert len(promoted) == 3, promoted


def test_conflicting_status_writes_are_retried_and_never_promote_stale_state(
    kube: ApiClient, namespace: str, operator: OperatorProcess, lab: Lab_, stack: Stack
) -> None:
    the_lab, _ = lab
    assert the_lab.router is not None
    models = Models(kube, namespace)
    api = client.CustomObjectsApi(kube)
    obj = error_rate_only()
    obj["spec"]["rollout"]["stages"][1]["duration"] = "3s"
    conflicts = len(log_lines(operator, f"{namespace}/{NAME} changed between"))
    writes, stop = [0], threading.Event()

    def busy_writer() -> None:
        """Changes the model all the time (an annotation), as other controllers or users do."""
        while not stop.is_set():
            body = {"metadata": {"annotations": {"test.quantrollout.io/poke": str(writes[0])}}}
            try:
                api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME, body)
                writes[0] += 1
            except ApiException:
                pass
            time.sleep(0.03)

    with PrometheusProxy(stack.prometheus.url) as proxy, Watcher(models) as watcher:
        obj["spec"]["prometheus"] = {"url": proxy.url}
        start(models, obj, the_lab.router.url)
        with Load(the_lab.router.url, SERVED, rate_per_s=30):
            # 1. Under a busy concurrent writer the operator's writes conflict, and it re-reads and
            #    retries until the rollout moves on: shadow -> ab, once.
            writer = threading.Thread(target=busy_writer, daemon=True)
            writer.start()
            try:
                wait_for("ab", lambda: status(models).get("stage") == "ab", 90)
                assert len(log_lines(operator, f"{namespace}/{NAME} changed between")) > conflicts
            finally:
                stop.set()
                writer.join()
            # 2. A promotion decided on stale state: A/B is held past its 3s by failing queries;
            #    then, between the operator's read and its write, another writer (another
            #    operator replica, say) rolls the model back. The evaluation passes, the operator
            #    decides to promote, and its write must lose: the rollback stands.
            proxy.failing = True
            held = wait_for(
                "A/B held past its duration",
                lambda: (
                    (s := status(models)).get("stage") == "ab"
                    and (s.get("lastAnalysis") or {}).get("verdict") == "Inconclusive"
                    and (at(s["lastAnalysis"]["at"]) - at(s["stageStartedAt"])).total_seconds() > 4
                    and s
                ),
                60,
            )
            conflicts = len(log_lines(operator, f"{namespace}/{NAME} changed between"))

            def roll_back_behind_its_back() -> None:
                traffic = {**held["traffic"], "targetWeight": 0, "mirrorPercent": 0}
                when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, NAME,
                    {"status": {"phase": "RolledBack", "targetWeight": 0, "mirrorPercent": 0,
                                "traffic": traffic, "rollout": {"rolledBackAt": when},
                                "rollback": {"at": when, "reasons": ["rolled back by another writer"]}}},
                )  # fmt: skip

            # The sample count is asked first in every evaluation (one batched query, see
            # analysis.batch): the other writer strikes between the operator's read and write.
            window = default_window(Analysis.model_validate(obj["spec"]["rollout"]["analysis"]))
            proxy.arm(batched_query(SAMPLES, window), roll_back_behind_its_back)
            wait_for("the operator's next evaluation", proxy.hook_fired.is_set, 30)
            wait_for(
                "the operator to lose the race (409)",
                lambda: len(log_lines(operator, f"{namespace}/{NAME} changed between")) > conflicts,
            )
            final = status(models)
    # The decision that lost the race was the promotion to 50% (A/B's time was up, it passed).
    lost = log_lines(operator, f"{namespace}/{NAME} changed between")[-1]
    assert "not applied: Progressing at step 2 (50% live)" in lost
    assert (final["phase"], final["stage"], final["targetWeight"]) == ("RolledBack", "ab", 0)
    assert final["traffic"]["targetWeight"] == 0
    assert final["rollback"]["reasons"] == ["rolled back by another writer"]
    assert writes[0] > 0
    # Seen over the whole test: shadow then A/B, never further; one promotion, applied once.
    assert {s.stage for s in watcher.seen} <= {None, "shadow", "ab"}
    assert max(s.live or 0 for s in watcher.seen) == 10
    assert promotions(kube, namespace) == ["analysis passed; now at ab (10% live)"]


def set_pods_ready(kube: ApiClient, namespace: str, ready: bool, restarts: int) -> int:
    """Reports every target pod as a kubelet would: Ready, or crash-looping and not Ready."""
    core = client.CoreV1Api(kube)
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"{MODEL_LABEL}={NAME},{TIER_LABEL}={TARGET}"
    ).items
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    value = "True" if ready else "False"
    for pod in pods:
        container = pod.spec.containers[0]
        state: dict[str, Any] = (
            {"running": {"startedAt": now}}
            if ready
            else {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}
        )  # fmt: skip
        core.patch_namespaced_pod_status(
            pod.metadata.name, namespace,
            {"status": {
                "conditions": [{"type": t, "status": value, "lastTransitionTime": now}
                               for t in ("Ready", "ContainersReady")],
                "containerStatuses": [{
                    "name": container.name, "image": container.image, "imageID": "",
                    "ready": ready, "started": ready, "restartCount": restarts, "state": state,
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }],
            }},
        )  # fmt: skip
    return len(pods)


def test_a_crash_looping_target_rolls_back_and_gets_no_traffic(
    kube: ApiClient, namespace: str, operator: OperatorProcess, lab: Lab_
) -> None:
    the_lab, _ = lab
    assert the_lab.router is not None
    models = Models(kube, namespace)
    obj = error_rate_only()
    obj["spec"]["rollout"]["stages"][1]["duration"] = "5m"  # stay in A/B
    start(models, obj, the_lab.router.url)
    with Load(the_lab.router.url, SERVED, rate_per_s=20), Watcher(models) as watcher:
        wait_for("ab", lambda: status(models).get("stage") == "ab", 60)
        assert set_pods_ready(kube, namespace, ready=False, restarts=1) == 1
        rolled = wait_for(
            "RolledBack", lambda: (s := status(models)).get("phase") == "RolledBack" and s, 30
        )
        rolled_at = len(watcher.seen)
        not_ready = models.wait_condition(NAME, "Ready", "False", "TiersNotReady")
        degraded = models.wait_condition(NAME, "Degraded", "True", "RolledBack")
        # The pods flap: Ready again, then crash-looping again. Nothing comes back by itself.
        set_pods_ready(kube, namespace, ready=True, restarts=2)
        models.wait_condition(NAME, "Ready", "True", "TiersReady")
        set_pods_ready(kube, namespace, ready=False, restarts=3)
        models.wait_condition(NAME, "Ready", "False", "TiersNotReady")
        final = status(models)
    why = f"target tier {TARGET} has no ready pod (0/1 ready)"
    assert rolled["rollback"]["reasons"] == [why]
    assert (rolled["stage"], rolled["targetWeight"], rolled["mirrorPercent"]) == ("ab", 0, 0)
    assert (rolled["traffic"]["targetWeight"], rolled["traffic"]["mirrorPercent"]) == (0, 0)
    assert why in degraded["message"]
    assert f"{TARGET} 0/1 ready" in not_ready["message"]
    assert (final["phase"], final["targetWeight"]) == ("RolledBack", 0)
    # Never promoted; from the rollback on, never any traffic for the target, through the flaps.
    assert {s.stage for s in watcher.seen} <= {None, "shadow", "ab"}
    assert all((s.live, s.mirror) == (0, 0) for s in watcher.seen[rolled_at:])
    # Through the router: every answer now comes from the baseline.
    with Load(the_lab.router.url, SERVED, rate_per_s=40) as load:
        wait_for("40 answers", lambda: load.stats.ok >= 40)
    assert set(load.stats.by_tier) == {BASELINE}
