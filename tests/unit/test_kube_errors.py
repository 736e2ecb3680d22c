"""Which API refusals mean "what we write to is being deleted" (nothing to reconcile) and which
are real errors a reconcile must raise. Pure: ApiException values, no API server."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from quantrollout.kube import going_away


def refusal(status: int, reason: str, causes: list[dict[str, str]] | None = None) -> ApiException:
    err = ApiException(status=status, reason=reason)
    details = {"causes": causes} if causes else {}
    err.body = json.dumps({"kind": "Status", "code": status, "reason": reason, "details": details})
    return err


TERMINATING = [{"reason": "NamespaceTerminating", "message": "namespace t-1 is being terminated"}]


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (refusal(404, "NotFound"), True),  # the model was deleted after it was read
        (refusal(403, "Forbidden", TERMINATING), True),  # its namespace is going away
        (refusal(403, "Forbidden"), False),  # RBAC: a missing verb is a real error
        (refusal(409, "Conflict"), False),
        (refusal(422, "Invalid"), False),
        (refusal(500, "InternalError"), False),
        (ApiException(status=403, reason="Forbidden"), False),  # no body at all
    ],
)
def test_going_away(err: ApiException, expected: bool) -> None:
    assert going_away(err) is expected
