"""The router's knobs, with the defaults `quantrollout router` uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from quantrollout import defaults

from .routes import Overrides


@dataclass(frozen=True)
class RouterSettings:
    max_body_bytes: int = defaults.ROUTER_MAX_BODY_BYTES  # larger request bodies get 413
    # Share (%) of mirrored requests the baseline answers twice (its agreement with itself).
    calibration_percent: int = defaults.ROUTER_CALIBRATION_PERCENT
    connect_timeout: float = 3.0  # seconds to open a connection to a tier
    # Seconds between two bytes of an answer. A non-streamed answer arrives only when the whole
    # generation is done, so this bounds a whole non-streamed request: keep it generous.
    read_timeout: float = 300.0
    max_connections: int = 1000  # pooled connections to all tiers together
    max_shadow_inflight: int = 256  # more mirrored calls than this at once are dropped, not queued
    # How long a shadow call waits for the live baseline answer it is compared with.
    shadow_compare_timeout: float = 600.0
    retry_after_seconds: int = 1  # Retry-After on 503 when no tier can be reached
    max_inspect_bytes: int = 4 << 20  # answers longer than this are passed on but not inspected
    # Overload: more completions in flight in one router process than this, or its event loop
    # running later than this many seconds, and new completions get 503 + Retry-After.
    max_inflight: int = defaults.ROUTER_MAX_INFLIGHT_PER_WORKER
    max_loop_lag: float = defaults.ROUTER_MAX_LOOP_LAG_S
    upstreams: Overrides = field(default_factory=dict)  # (namespace, service) -> base URL
