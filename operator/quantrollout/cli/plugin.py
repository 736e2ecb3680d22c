"""`kubectl quantrollout`: the kubectl plugin on-call engineers use to watch and steer rollouts.

    kubectl quantrollout get [NAME] [--watch]     the model(s): tiers, stages, weights, analysis
    kubectl quantrollout promote|abort|retry NAME  one-shot action (annotation quantrollout.io/action)
    kubectl quantrollout pause|resume NAME         spec.rollout.paused (the GitOps-friendly pause)

It reads the user's kubeconfig like kubectl does (`--kubeconfig`, else KUBECONFIG, else
~/.kube/config; `--context`; `-n` defaulting to the context's namespace, else "default").
Actions are merge patches sent with the field manager `kubectl-quantrollout`, which the operator
names in its Event. What is printed comes from the pure functions in `plugin_render`; this module
only parses arguments, talks to the API server and turns its errors into one line each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from quantrollout.api.crd import GROUP, PLURAL, VERSION
from quantrollout.cli.plugin_render import (
    ACTIONS,
    action_patch,
    pause_patch,
    render_action,
    render_model,
    render_pause,
    render_table,
)

FIELD_MANAGER = "kubectl-quantrollout"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
WATCH_SECONDS = 240  # the server ends each watch after this; it is resumed from the last version
CLEAR_SCREEN = "\x1b[H\x1b[2J"
COMMANDS = ("get", *ACTIONS, "pause", "resume")


# ---------------------------------------------------------------------------------------------
# Arguments


@dataclass(frozen=True)
class Options:
    command: str
    name: str | None = None
    watch: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a flag given before the command is not reset by the subcommand's default.
    parser.add_argument(
        "--kubeconfig", metavar="PATH", default=argparse.SUPPRESS,
        help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)",
    )  # fmt: skip
    parser.add_argument(
        "--context", metavar="NAME", default=argparse.SUPPRESS,
        help="kubeconfig context (default: the current context)",
    )  # fmt: skip
    parser.add_argument(
        "-n", "--namespace", metavar="NS", default=argparse.SUPPRESS,
        help="namespace (default: the context's namespace, else default)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl quantrollout",
        description="Watch and steer QuantizedModel rollouts (shadow -> ab -> gradual -> full).",
    )
    _add_connection_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = sub.add_parser(
        "get", help="show a model (or list the models of the namespace)",
        description="Show a QuantizedModel: tiers, stages, weights, last analysis, rollback "
        "reasons and conditions. Without NAME: one line per model of the namespace.",
    )  # fmt: skip
    get.add_argument("name", nargs="?", metavar="NAME", help="the QuantizedModel")
    get.add_argument(
        "-w", "--watch", action="store_true", help="redraw on every change (Ctrl-C to stop)"
    )
    _add_connection_flags(get)
    helps = {
        "promote": "move to the next step now (annotation quantrollout.io/action=promote)",
        "abort": "send all traffic back to the baseline (quantrollout.io/action=abort)",
        "retry": "start again after a rollback (quantrollout.io/action=retry)",
        "pause": "hold the rollout where it is (spec.rollout.paused: true)",
        "resume": "let a paused rollout go on (spec.rollout.paused: false)",
    }
    for command, text in helps.items():
        action = sub.add_parser(command, help=text, description=text)
        action.add_argument("name", metavar="NAME", help="the QuantizedModel")
        _add_connection_flags(action)
    return parser


def parse_args(argv: Sequence[str] | None) -> Options:
    """The command line as Options; exits with status 2 and a usage line when it is wrong."""
    args = build_parser().parse_args(argv)
    return Options(
        command=args.command,
        name=args.name,
        watch=bool(getattr(args, "watch", False)),
        kubeconfig=getattr(args, "kubeconfig", None),
        context=getattr(args, "context", None),
        namespace=getattr(args, "namespace", None),
    )


# ---------------------------------------------------------------------------------------------
# Kubeconfig


def namespace_for(
    explicit: str | None,
    contexts: Sequence[Mapping[str, Any]],
    active: Mapping[str, Any] | None,
    context: str | None,
) -> str:
    """`-n`, else the namespace of the chosen (or current) context, else `default`."""
    if explicit:
        return explicit
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


@dataclass(frozen=True)
class Connection:
    api: client.ApiClient
    namespace: str
    server: str


class PluginError(Exception):
    """A failure to report in one line (exit status 1)."""


def _in_cluster() -> bool:
    default = os.path.expanduser("~/.kube/config")
    return (
        "KUBERNETES_SERVICE_HOST" in os.environ
        and not os.environ.get("KUBECONFIG")
        and not os.path.exists(default)
    )


def connect(opts: Options) -> Connection:
    """An API client from the kubeconfig, like kubectl (in-cluster credentials when in a pod
    without a kubeconfig)."""
    cfg = client.Configuration()
    try:
        if opts.kubeconfig is None and opts.context is None and _in_cluster():
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return Connection(
                client.ApiClient(cfg), opts.namespace or _pod_namespace(), str(cfg.host)
            )
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=opts.kubeconfig,
            context=opts.context,
            client_configuration=cfg,
            persist_config=False,
        )
        contexts, active = config.list_kube_config_contexts(opts.kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as err:
        where = opts.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise PluginError(f"no usable kubeconfig ({where}): {one_line(str(err))}") from None
    cfg.retries = 0  # a cluster that is not there fails at once, not after urllib3's retries
    namespace = namespace_for(opts.namespace, contexts, active, opts.context)
    return Connection(client.ApiClient(cfg), namespace, str(cfg.host))


def _pod_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


# ---------------------------------------------------------------------------------------------
# Errors


def one_line(text: str) -> str:
    return " ".join(text.split())


def _status_body(body: str | bytes | None) -> dict[str, Any]:
    if not body:
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def api_error_line(
    status: int,
    body: str | bytes | None,
    reason: str,
    name: str | None,
    namespace: str,
    server: str,
) -> str:
    """One line for an error answer of the API server."""
    details = _status_body(body)
    message = one_line(str(details.get("message") or reason or "").strip())
    if status == 404:
        if details.get("reason") == "NotFound" and name:
            return f'quantizedmodel "{name}" not found in namespace "{namespace}"'
        if details.get("reason") == "NotFound":
            return f"not found: {message}"
        return (
            f"the cluster at {server} has no QuantizedModel resource "
            f"({PLURAL}.{GROUP}/{VERSION}): is the quantrollout CRD installed?"
        )
    if status == 403:
        return f"forbidden: {message}" if message else "forbidden"
    if status == 401:
        return f"unauthorized: the cluster at {server} did not accept your credentials"
    return f"the API server answered {status}: {message}"


def error_line(err: Exception, name: str | None, namespace: str, server: str) -> str:
    if isinstance(err, ApiException):
        if not err.status:  # the client reports some connection failures as status 0
            return f"cannot reach the cluster at {server}: {one_line(str(err.reason))}"
        return api_error_line(err.status, err.body, str(err.reason), name, namespace, server)
    reason = one_line(str(getattr(err, "reason", None) or err))
    reason = re.sub(r"^(<[^>]*>|None): ", "", reason)  # urllib3 names its connection object first
    return f"cannot reach the cluster at {server}: {reason}"


# ---------------------------------------------------------------------------------------------
# Commands


def as_dict(value: object) -> dict[str, Any]:
    """An API answer (a JSON object) as a dict."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object from the API server, got {type(value).__name__}")
    return dict(value)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Models:
    """The QuantizedModels of one namespace."""

    def __init__(self, conn: Connection) -> None:
        self.custom = client.CustomObjectsApi(conn.api)
        self.namespace = conn.namespace

    def get(self, name: str) -> dict[str, Any]:
        return as_dict(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def list(self) -> tuple[list[dict[str, Any]], str]:
        """The models and the list's resourceVersion (where a watch starts)."""
        found = as_dict(
            self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
        )
        items = [dict(item) for item in found.get("items") or []]
        return items, str((found.get("metadata") or {}).get("resourceVersion") or "")

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, body,
            field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT,
        )  # fmt: skip

    def events(self, name: str | None, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) for every change after `version`, until the server ends the watch."""
        selector = {"field_selector": f"metadata.name={name}"} if name else {}
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
            resource_version=version, timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True,
            _request_timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + 30), **selector,
        )  # fmt: skip
        for event in stream:
            yield str(event["type"]), dict(event["raw_object"])


def version_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def frame(models: Mapping[str, Mapping[str, Any]], name: str | None, namespace: str) -> str:
    """What `get --watch` shows for the current state of the watched models."""
    if name is None:
        return render_table(list(models.values()), namespace, _now())
    if name not in models:
        return f'quantizedmodel "{name}" was deleted from namespace "{namespace}"\n'
    return render_model(models[name], _now())


def watch_models(
    models: Models, name: str | None, out: TextIO, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Draws the model(s), then redraws on every change the watch reports, until Ctrl-C."""
    tty = out.isatty()
    state: dict[str, dict[str, Any]] = {}
    version = ""
    shown: str | None = None
    needs_list = True
    while True:
        if needs_list:
            if name is not None:
                obj = models.get(name)  # a missing model is an error before the first frame
                state, version = {name: obj}, version_of(obj)
            else:
                items, version = models.list()
                state = {str(o["metadata"]["name"]): o for o in items}
            needs_list = False
        text = frame(state, name, models.namespace)
        if text != shown:
            out.write((CLEAR_SCREEN if tty else "" if shown is None else "\n") + text)
            out.flush()
            shown = text
        try:
            for kind, obj in models.events(name, version):
                version = version_of(obj) or version
                if kind == "BOOKMARK":
                    continue
                key = str(obj["metadata"]["name"])
                if kind == "DELETED":
                    state.pop(key, None)
                else:
                    state[key] = obj
                text = frame(state, name, models.namespace)
                if text != shown:
                    out.write((CLEAR_SCREEN if tty else "\n") + text)
                    out.flush()
                    shown = text
        except ApiException as err:
            if err.status != 410:
                raise
            needs_list = True  # the version we watched from is gone: list again
        except (urllib3.exceptions.HTTPError, OSError):
            sleep(1.0)  # the connection dropped mid-watch: list again and resume
            needs_list = True


def run(opts: Options, conn: Connection, out: TextIO) -> int:
    models = Models(conn)
    if opts.command == "get":
        if opts.watch:
            return watch_models(models, opts.name, out)
        if opts.name:
            out.write(render_model(models.get(opts.name), _now()))
        else:
            out.write(render_table(models.list()[0], conn.namespace, _now()))
        return 0
    assert opts.name is not None  # the parser requires NAME for every action
    if opts.command in ACTIONS:
        models.patch(opts.name, action_patch(opts.command))
        out.write(render_action(conn.namespace, opts.name, opts.command))
        return 0
    paused = opts.command == "pause"
    models.patch(opts.name, pause_patch(paused))
    out.write(render_pause(conn.namespace, opts.name, paused))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        conn = connect(opts)
    except PluginError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    try:
        return run(opts, conn, sys.stdout)
    except KeyboardInterrupt:
        print(file=sys.stdout)
        return 0
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
        print(f"Error: {error_line(err, opts.name, conn.namespace, conn.server)}", file=sys.stderr)
        return 1
    finally:
        conn.api.close()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
