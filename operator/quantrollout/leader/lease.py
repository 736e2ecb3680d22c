"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go and controller-runtime do it,
so that of several operator replicas exactly one acts.

A replica that is not the leader does nothing at all (it does not even start Kopf); it polls the
Lease every `retry_period` and takes it over when the holder has not renewed it for
`lease_duration`, measured on the follower's own clock from the moment it last saw the Lease
change (so clock skew between nodes does not matter). The leader renews every `retry_period`; if
it cannot renew for `renew_deadline` (shorter than `lease_duration`) it stops acting, before
anyone else may take over. Every write carries the `resourceVersion` it read: of two replicas
racing for the same Lease, one gets 409 Conflict and stays a follower. A leader that stops
cleanly (SIGTERM) releases the Lease, so the next one takes over within one `retry_period`.

The decision is pure (`quantrollout.leader.election.decide`); this module is the I/O.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .election import LeaseRecord, Move, Seen, Timing, decide

log = logging.getLogger(__name__)


def _micro_time(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLock:
    """One candidate for the Lease `namespace/name`, as `identity`."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing or Timing()
        self._clock = clock
        self._seen: Seen | None = None
        self._renewed_at = 0.0
        self.holder = ""  # as last read

    def _read(self) -> LeaseRecord | None:
        try:
            response: Any = self.coordination.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(response.data)
        spec = lease.get("spec") or {}
        return LeaseRecord(
            holder=spec.get("holderIdentity") or "",
            duration_s=float(spec.get("leaseDurationSeconds") or self.timing.lease_duration),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str(lease["metadata"]["resourceVersion"]),
        )

    def _body(
        self, record: LeaseRecord | None, holder: str
    ) -> Any:  # a dict the client sends as is
        now = _micro_time(datetime.datetime.now(datetime.UTC))
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(self.timing.lease_duration)),
            "renewTime": now,
        }
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record is None:
            spec |= {"acquireTime": now, "leaseTransitions": 0}
        else:
            metadata["resourceVersion"] = record.resource_version
            changed = record.holder != holder
            spec["leaseTransitions"] = record.transitions + (1 if changed and holder else 0)
            if changed:
                spec["acquireTime"] = now
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    def try_once(self) -> bool:
        """Reads the Lease and acts on it once; True when we hold it afterwards."""
        record = self._read()
        self.holder = record.holder if record else ""
        move, self._seen = decide(record, self._seen, self.identity, self._clock())
        if move is Move.WAIT:
            return False
        try:
            if move is Move.CREATE:
                self.coordination.create_namespaced_lease(
                    self.namespace, self._body(None, self.identity)
                )
            else:
                self.coordination.replace_namespaced_lease(
                    self.name, self.namespace, self._body(record, self.identity)
                )
        except ApiException as err:
            if err.status == 409:  # another replica wrote first: it won this round
                return False
            raise
        if move is not Move.RENEW:
            log.info(
                "became the leader (Lease %s/%s, as %s)", self.namespace, self.name, self.identity
            )
        self._renewed_at = self._clock()
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Blocks until we hold the Lease (True) or `stop` is set (False)."""
        log.info("waiting to lead: Lease %s/%s, as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            try:
                if self.try_once():
                    return True
            except (ApiException, OSError) as err:  # the API server is away: keep trying
                log.warning("leader election: %s", err)
            stop.wait(self.timing.retry_period)
        return False

    def hold(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renews until `stop` is set; calls `on_lost` (once) if a renewal cannot succeed within
        the renew deadline or someone else holds the Lease. Run it in a thread."""
        while not stop.wait(self.timing.retry_period):
            try:
                if self.try_once():
                    continue
                reason = "the renewal conflicted with another write"
            except (ApiException, OSError) as err:
                reason = f"cannot renew the Lease: {err}"
            if self.holder not in ("", self.identity):
                reason = f"{self.holder} holds the Lease"
            elif self._clock() - self._renewed_at < self.timing.renew_deadline:
                log.warning("leader election: %s; retrying", reason)
                continue
            log.error("lost leadership (%s): stopping", reason)
            on_lost()
            return

    def release(self) -> None:
        """Gives the Lease up if we still hold it, so a follower takes over at once."""
        try:
            record = self._read()
            if record is None or record.holder != self.identity:
                return
            body = self._body(record, "")
            body["spec"]["leaseDurationSeconds"] = 1
            self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
            log.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError) as err:  # it will expire by itself
            log.warning("could not release the Lease: %s", err)
