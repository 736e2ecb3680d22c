"""The route table: served names, conflicts (oldest wins), reload diffs, upstream URLs. Pure."""

from __future__ import annotations

import logging

import pytest

from quantrollout.api.status import TrafficBackend, TrafficStatus
from quantrollout.router.routes import (
    ModelTraffic,
    build_table,
    changed,
    parse_override,
    upstream_url,
)
from quantrollout.router.source import StaticConfigSource

BASE = TrafficBackend(tier="fp16", service="llama-fp16")


def model(
    name: str, served: str = "llama", created: str = "2026-01-01T00:00:00Z", ns: str = "llm",
    weight: int = 0,
) -> ModelTraffic:  # fmt: skip
    traffic = TrafficStatus(
        rollout_id="r", served_model=served, target_weight=weight, mirror_percent=0, baseline=BASE
    )
    return ModelTraffic(ns, name, created, traffic)


def test_table_by_served_name() -> None:
    a, b = model("a", "alpha"), model("b", "beta")
    table, conflicts = build_table([a, b])
    assert dict(table) == {"alpha": a, "beta": b}
    assert conflicts == []


def test_the_oldest_claimant_wins() -> None:
    old = model("old", created="2026-01-01T00:00:00Z", ns="zz")
    new = model("new", created="2026-02-01T00:00:00Z", ns="aa")
    newer = model("newer", created="2026-03-01T00:00:00Z")
    for order in ([old, new, newer], [newer, new, old], [new, old, newer]):
        table, conflicts = build_table(order)
        assert table["llama"] == old
        assert len(conflicts) == 1
        assert conflicts[0].winner == old
        assert conflicts[0].losers == (new, newer)
        assert "the oldest, zz/old, keeps it; ignored: aa/new, llm/newer" in conflicts[0].message()


def test_same_age_is_decided_by_namespace_then_name() -> None:
    x, y = model("b", ns="ns1"), model("a", ns="ns2")
    assert build_table([y, x])[0]["llama"] == x


def test_conflicts_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    old, new = model("old"), model("new", created="2026-05-05T00:00:00Z")
    source = StaticConfigSource([old, new])
    source.set([old, new])  # the same conflict again: no new warning
    assert sum("claimed by several" in r.message for r in caplog.records) == 1
    source.set([old])
    source.set([old, new])  # it came back: warned again
    assert sum("claimed by several" in r.message for r in caplog.records) == 2


def test_listeners_hear_changes_only() -> None:
    source = StaticConfigSource([model("a")])
    heard: list[tuple[list[str], list[str]]] = []
    source.subscribe(lambda old, new: heard.append((sorted(old), sorted(new))))
    source.set([model("a")])  # equal: nothing to apply
    source.set([model("a", weight=10)])
    source.set([])
    assert heard == [(["llama"], ["llama"]), (["llama"], [])]


def test_changed_lists_new_and_different_models() -> None:
    a, b = model("a", "alpha"), model("b", "beta")
    old, _ = build_table([a, b])
    new, _ = build_table([a, model("b", "beta", weight=25), model("c", "gamma")])
    assert [m.name for m in changed(old, new)] == ["b", "c"]
    assert changed(new, new) == []


def test_upstream_urls() -> None:
    backend = TrafficBackend(tier="fp16", service="llama-fp16", port=8000)
    assert upstream_url("llm", backend, {}) == "http://llama-fp16.llm.svc:8000"
    overrides = {("llm", "llama-fp16"): "http://127.0.0.1:9000"}
    assert upstream_url("llm", backend, overrides) == "http://127.0.0.1:9000"
    assert upstream_url("other", backend, overrides) == "http://llama-fp16.other.svc:8000"


def test_parse_override() -> None:
    assert parse_override("llm/llama-fp16=http://127.0.0.1:9000/") == (
        ("llm", "llama-fp16"),
        "http://127.0.0.1:9000",
    )
    for bad in ("llama-fp16=http://x", "llm/=http://x", "/s=http://x", "llm/s", "llm/s=ftp://x"):
        with pytest.raises(ValueError, match=r"NAMESPACE/SERVICE=URL|must start with http"):
            parse_override(bad)
