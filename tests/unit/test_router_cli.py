"""`quantrollout router`: its options parse into what the router needs."""

from __future__ import annotations

import pytest

from quantrollout.cli.main import build_parser


def test_router_defaults() -> None:
    args = build_parser().parse_args(["router"])
    assert (args.host, args.port, args.namespace, args.upstream) == ("0.0.0.0", 8080, None, [])


def test_router_options() -> None:
    args = build_parser().parse_args(
        ["router", "-n", "llm", "--port", "9000", "--upstream", "llm/m-fp16=http://127.0.0.1:1",
         "--upstream", "llm/m-int4=http://127.0.0.1:2", "--max-body-bytes", "10"]
    )  # fmt: skip
    assert args.namespace == "llm"
    assert args.port == 9000
    assert args.max_body_bytes == 10
    assert dict(args.upstream) == {
        ("llm", "m-fp16"): "http://127.0.0.1:1",
        ("llm", "m-int4"): "http://127.0.0.1:2",
    }


def test_router_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["router", "--upstream", "no-namespace=http://x"])
    assert "NAMESPACE/SERVICE=URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["router", "-A", "-n", "llm"])


def test_router_workers() -> None:
    from quantrollout.router.workers import cpu_limit

    assert build_parser().parse_args(["router"]).workers is None  # the default: one
    assert build_parser().parse_args(["router", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["router", "--workers", "auto"]).workers == cpu_limit()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["router", "--workers", "0"])
