"""A bounded load generator for the demo and the tests: chat completions at a steady rate to one
URL on loopback, from a pool of users (the sticky header), counting answers by tier (the
simulator's x-vllmsim-tier header) and errors. Stops by itself after `max_seconds`."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

PROMPTS = (
    "Summarise the plot of Hamlet in two sentences.",
    "Write a haiku about GPUs.",
    "Explain KV caches to a new engineer.",
    "What is the capital of Australia?",
    "List three uses of quantization.",
    "Translate 'good morning' into French.",
)


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    by_tier: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)


class Load:
    def __init__(
        self, url: str, model: str, *, rate_per_s: float = 20, users: int = 200,
        sticky_header: str = "x-user-id", max_seconds: float = 900, workers: int = 4,
    ) -> None:  # fmt: skip
        self.url, self.model = url.rstrip("/"), model
        self.interval = workers / rate_per_s
        self.users, self.sticky_header, self.workers = users, sticky_header, workers
        self.max_seconds = max_seconds
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counter = itertools.count()

    def start(self) -> Load:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        return self.stats

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self, worker: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n = next(self._counter)
                body = {
                    "model": self.model,
                    "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}],
                    "temperature": 0,
                    "max_tokens": 64,
                }
                headers = {self.sticky_header: f"user-{n % self.users}"}
                try:
                    resp = client.post(
                        f"{self.url}/v1/chat/completions", json=body, headers=headers
                    )
                    with self._lock:
                        self.stats.sent += 1
                        self.stats.statuses[resp.status_code] += 1
                        if resp.status_code == 200:
                            self.stats.ok += 1
                            self.stats.by_tier[resp.headers.get("x-vllmsim-tier", "?")] += 1
                        else:
                            self.stats.errors += 1
                except httpx.HTTPError:
                    with self._lock:
                        self.stats.sent += 1
                        self.stats.errors += 1
                self._stop.wait(self.interval)
