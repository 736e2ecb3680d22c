"""Kopf handlers: thin glue between Kubernetes events and the pure decision code.

Only settings live here so far; the reconcile handlers arrive with the API (see DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf's own bookkeeping goes into `status`, never into annotations: the object in Git and
    # the object in the cluster then differ only in `status`, so Argo CD sees no drift.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    # Events are for on-call humans: warnings and our own transitions, not Kopf's chatter.
    settings.posting.level = 30  # logging.WARNING
