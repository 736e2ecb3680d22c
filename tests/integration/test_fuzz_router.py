"""The router under hypothesis-generated requests: a real `quantrollout router` process on loopback,
configured from a real QuantizedModel's status, in front of two vLLM simulators (weight 50%,
mirror 50%, so live, fallback and shadow paths all run). Bodies that are not JSON, JSON of the
wrong shape, wrong types, huge numbers, unicode, odd methods, paths, query strings, headers and
content types.

The router itself never answers 5xx: a 5xx is accepted only when it carries the simulator's own
`x-vllmsim-tier` header (a tier's answer relayed as it is), so a relayed error and one the router
made up are told apart by who wrote the response, not by its status. The process never logs a
traceback, and it is healthy and routes afterwards.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client import ApiClient

from localstack.lab import RouterProcess
from localstack.stack import Stack
from quantrollout.api.crd import GROUP, PLURAL, VERSION
from vllmsim import Simulator

from .support import example, wait_for

SIM_HEADER = "x-vllmsim-tier"
EXAMPLES = 150
T = TypeVar("T")  # about a minute on a loaded two-core machine


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the connection closed without a response
    headers: dict[str, str]
    body: bytes


def send_raw(port: int, request: bytes, timeout: float = 30) -> Answer:
    """One request on its own connection, byte for byte as given (no client library in the way:
    httpx refuses to send the illegal header values a broken or hostile client sends)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # A server may answer (say, 405 or 413) and close before it has read a large body: the
        # rest of our upload then meets a reset, and the answer may or may not be readable.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return Answer(None, {}, received)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


class Fuzzed:
    """The router under test, its log, and who answered what."""

    def __init__(self, router: RouterProcess, served: str) -> None:
        self.router, self.served = router, served
        self.client = httpx.Client(base_url=router.url, timeout=20)
        self.statuses: dict[int | None, int] = {}
        self.reached_tier = 0

    def send(self, request: bytes) -> Answer:
        answer = send_raw(self.router.port, request)
        self.statuses[answer.status] = self.statuses.get(answer.status, 0) + 1
        self.reached_tier += SIM_HEADER in answer.headers
        return answer


@pytest.fixture(scope="module")
def fuzzed(
    stack: Stack, kube: ApiClient, crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    core = client.CoreV1Api(kube)
    namespace = f"t-fuzz-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    served = f"fuzz-{uuid.uuid4().hex[:6]}"
    sims = {tier: Simulator(model=served, port=0, tier=tier) for tier in ("fp16", "int4-awq")}
    for sim in sims.values():
        sim.start()
    router: RouterProcess | None = None
    try:
        obj = example()
        obj["metadata"] = {"name": "m"}
        obj["spec"]["model"] = served
        # Too little GPU memory for the baseline (see test_router_kube.py): an operator running
        # in this session refuses to deploy, so it never writes traffic over what we write here.
        obj["spec"]["serving"]["gpu"]["memoryGiB"] = 8
        obj["spec"]["modelShape"] = {"parametersB": 8, "layers": 32, "kvHeads": 8, "headDim": 128}
        api = client.CustomObjectsApi(kube)
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)
        traffic = {
            "rolloutId": "r1",
            "servedModel": served,
            "targetWeight": 50,
            "mirrorPercent": 50,
            "stickyHeader": "x-user-id",
            "baseline": {"tier": "fp16", "service": "m-fp16", "port": 8000},
            "target": {"tier": "int4-awq", "service": "m-int4-awq", "port": 8000},
        }
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "m", {"status": {"traffic": traffic}}
        )
        upstreams = {(namespace, f"m-{tier}"): sim.url for tier, sim in sims.items()}
        log = tmp_path_factory.mktemp("fuzz-router") / "router.log"
        router = RouterProcess(stack.controlplane.kubeconfig, log, upstreams, namespace)
        router.start()
        fuzz = Fuzzed(router, served)
        wait_for("the router to route the model", lambda: _routes(fuzz), timeout=30)
        yield fuzz
        fuzz.client.close()
    finally:
        if router is not None:
            router.stop()
        for sim in sims.values():
            sim.stop()
        core.delete_namespace(namespace)


def _routes(fuzz: Fuzzed) -> bool:
    try:
        listed = fuzz.client.get("/v1/models").json()
    except (httpx.HTTPError, ValueError):
        return False
    return fuzz.served in [m["id"] for m in listed.get("data", [])]


# --- strategies -----------------------------------------------------------------------------

COMPLETIONS = ["/v1/chat/completions", "/v1/completions"]
SERVED = "<served>"  # replaced by the real served name when the request is built

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "assistant", "tool", ""]),
                "content": scalars,
            }
        ),
        max_size=3,
    ),
    json_values,
)


@st.composite
def completion_bodies(draw: st.DrawFn) -> Any:
    """A valid request with a few fields changed: missing, of the wrong type, huge, odd unicode."""
    body: dict[str, Any] = {
        "model": SERVED,
        "messages": [{"role": "user", "content": draw(st.text(max_size=40))}],
    }
    fields = ["model", "messages", "prompt", "stream", "temperature", "max_tokens", "n", "seed"]
    if draw(st.sampled_from(["valid", "changed", "changed", "changed"])) == "valid":
        fields = []
    for key in [*fields, "<new>"]:
        # Each field on its own: kept half the time, else dropped or of another type.
        change = draw(
            st.sampled_from(["keep", "keep", "keep", "keep", "drop", "any", "number", "text"])
        )
        if change == "keep":
            continue
        key = draw(st.text(max_size=12)) if key == "<new>" else key
        if change == "drop":
            body.pop(key, None)
        elif change == "any":
            body[key] = draw(json_values)
        elif change == "number":
            body[key] = draw(
                st.integers(min_value=-(10**30), max_value=10**30)
                | st.floats(allow_nan=True, allow_infinity=True)
            )
        else:
            body[key] = draw(st.text(max_size=30))
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return body


def encode(value: Any) -> bytes:
    # allow_nan: NaN and Infinity are what a careless client library sends.
    return json.dumps(value, allow_nan=True).encode()


header_values = st.sampled_from([False, False, False, True]).flatmap(
    lambda odd: (
        # What no well-behaved client sends: control characters, bytes past ASCII (not CR or
        # LF, which would end the header line).
        st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n").strip())
        if odd
        else st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
            lambda t: t.strip().encode()
        )
    )
)
token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+.^_`|~",
    min_size=1,
    max_size=20,
)


def weighted(draw: st.DrawFn, common: st.SearchStrategy[T], odd: st.SearchStrategy[T]) -> T:
    """Mostly `common`, one time in four `odd` (`a | b` would pick each half the time)."""
    # sampled_from, not integers(0, 3) == 0: hypothesis favours the bounds of integer ranges.
    return draw(odd) if draw(st.sampled_from([False, False, False, True])) else draw(common)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, list[tuple[bytes, bytes]]]:
    method = weighted(
        draw, st.just("POST"), st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
    )
    path = weighted(
        draw,
        st.sampled_from(COMPLETIONS),
        st.sampled_from(["/v1/models", "/health", "/metrics", "/", "/v1", "//v1/completions"])
        | st.text(max_size=20).map(lambda t: "/" + t),
    )
    if draw(st.integers(0, 4)) == 0:
        path += "?" + draw(st.text(max_size=20))
    content_type = weighted(
        draw,
        st.just(b"application/json"),
        st.sampled_from(
            [b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data", b""]
        )
        | header_values,
    )
    headers = [(b"content-type", content_type)]
    if draw(st.booleans()):
        headers.append((b"x-user-id", draw(header_values)))
    for _ in range(draw(st.integers(0, 2))):
        headers.append((draw(token).encode(), draw(header_values)))
    body = weighted(
        draw,
        completion_bodies().map(encode),
        st.one_of(
            json_values.map(encode),
            st.binary(max_size=200),
            st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
            completion_bodies().map(lambda b: encode(b)[: len(encode(b)) // 2]),  # cut short
            st.integers((1 << 20) - 8, (1 << 20) + 8).map(lambda n: b"[" + b"1," * (n // 2)),
        ),
    )
    return method, path, body, headers


# --- the test -------------------------------------------------------------------------------


def build(
    served: str, method: str, target: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> bytes:
    body = body.replace(SERVED.encode(), served.encode())
    # The request target as a client would put it on the wire: UTF-8, no spaces or line breaks.
    raw_target = target.encode("utf-8", "surrogatepass")
    for bad, escaped in ((b" ", b"%20"), (b"\r", b"%0D"), (b"\n", b"%0A")):
        raw_target = raw_target.replace(bad, escaped)
    lines = [
        method.encode() + b" " + raw_target + b" HTTP/1.1",
        b"host: 127.0.0.1",
        b"connection: close",
        b"content-length: " + str(len(body)).encode(),
        *(name + b": " + value for name, value in headers),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same examples on every run: CI is reproducible
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=requests())
def test_fuzzed_requests_never_get_a_5xx_from_the_router(
    fuzzed: Fuzzed, request: tuple[str, str, bytes, list[tuple[bytes, bytes]]]
) -> None:
    method, path, body, headers = request
    answer = fuzzed.send(build(fuzzed.served, method, path, body, headers))
    if answer.status is not None and answer.status >= 500:
        assert SIM_HEADER in answer.headers, (
            f"the router itself answered {answer.status} to {method} {path!r} "
            f"{body[:200]!r}: {answer.body[:300]!r}"
        )
    assert fuzzed.router.proc is not None
    assert fuzzed.router.proc.poll() is None, "the router died"


def test_after_the_fuzzing_the_router_is_healthy_and_logged_no_traceback(
    fuzzed: Fuzzed,
) -> None:
    # Runs after the fuzz test (same module, file order); on its own it checks a fresh router.
    health = fuzzed.client.get("/health")
    assert health.status_code == 200, health.text
    answer = fuzzed.client.post(
        "/v1/chat/completions",
        json={"model": fuzzed.served, "messages": [{"role": "user", "content": "still there?"}]},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers[SIM_HEADER] == answer.headers["x-quantrollout-tier"]
    log = Path(fuzzed.router.log).read_text(errors="replace")
    for sign in (
        "Traceback",
        "Exception in ASGI application",
        "Task exception was never retrieved",
    ):
        assert sign not in log, log[-3000:]
    if sum(fuzzed.statuses.values()) > 1:  # the fuzz test ran first: it must have reached tiers
        assert fuzzed.reached_tier > 10, fuzzed.statuses
