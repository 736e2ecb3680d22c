"""`quantrollout router`: its options parse into what the router needs."""

from __future__ import annotations

import argparse

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


def test_router_settings_and_their_defaults() -> None:
    from quantrollout.cli.main import router_settings
    from quantrollout.defaults import ROUTER_CALIBRATION_PERCENT, ROUTER_MAX_BODY_BYTES

    default = router_settings(build_parser().parse_args(["router"]), {})
    assert (default.max_body_bytes, default.calibration_percent) == (
        ROUTER_MAX_BODY_BYTES,
        ROUTER_CALIBRATION_PERCENT,
    )
    assert ROUTER_MAX_BODY_BYTES == 32 << 20  # a base64 image or an audio upload fits
    from_env = router_settings(
        build_parser().parse_args(["router"]), {"QR_ROUTER_MAX_BODY_BYTES": "2048"}
    )
    assert from_env.max_body_bytes == 2048
    given = build_parser().parse_args(
        ["router", "--max-body-bytes", "4096", "--calibration-percent", "25"]
    )
    settings = router_settings(given, {"QR_ROUTER_MAX_BODY_BYTES": "2048"})
    assert (settings.max_body_bytes, settings.calibration_percent) == (4096, 25)  # flag wins
    with pytest.raises(argparse.ArgumentTypeError, match="QR_ROUTER_MAX_BODY_BYTES"):
        router_settings(build_parser().parse_args(["router"]), {"QR_ROUTER_MAX_BODY_BYTES": "lots"})


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-body-bytes", "0"],
        ["--max-body-bytes", "1MiB"],
        ["--calibration-percent", "101"],
        ["--calibration-percent", "-1"],
    ],
)
def test_router_refuses_bad_limits(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["router", *argv])
    assert argv[0] in capsys.readouterr().err


def test_router_workers() -> None:
    from quantrollout.router.workers import cpu_limit

    assert build_parser().parse_args(["router"]).workers is None  # the default: one
    assert build_parser().parse_args(["router", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["router", "--workers", "auto"]).workers == cpu_limit()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["router", "--workers", "0"])
