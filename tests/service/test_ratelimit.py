"""The token bucket, with a controllable clock."""

from __future__ import annotations

import pytest

from pipelines.service.ratelimit import TokenBucketLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_per_key() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    clock.now += 100  # refill never exceeds the burst
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0


def test_bad_settings_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate_per_s=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate_per_s=1, burst=0)
