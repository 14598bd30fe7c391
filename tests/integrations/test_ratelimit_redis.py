"""Rate limits shared through a real Redis (127.0.0.1:6379): two limiters, as in two API
processes, draw on one budget per key; tokens charged in one are missing in the other."""

from __future__ import annotations

import secrets

from tuneforge.config import Settings
from tuneforge.services.ratelimit import RateLimiter, RedisRateLimiter, make_limiter


def test_two_limiters_share_one_budget_per_key(redis_url):
    prefix = f"tftest:{secrets.token_hex(4)}"  # this test's own keys in the shared Redis
    a, b = (RedisRateLimiter(redis_url, rpm=4, tpm=100, prefix=prefix) for _ in range(2))
    assert [x.acquire("k") for x in (a, b, a, b)] == [None] * 4
    for x in (a, b):
        refused = x.acquire("k")
        assert refused is not None and refused.kind == "requests" and refused.limit == 4
        assert 0 < refused.retry_after <= 15.5  # one request back in 60/4 s
    assert a.acquire("other") is None  # per key
    a.charge("t", 150)  # a big completion, answered by one process, overdraws for both
    refused = b.acquire("t")
    assert refused is not None and refused.kind == "tokens" and refused.retry_after > 29


def test_make_limiter_uses_redis_only_when_configured(redis_url, tmp_path):
    plain = make_limiter(Settings(data_dir=tmp_path, rate_limit_rpm=5))
    assert type(plain) is RateLimiter and not plain.blocking
    shared = make_limiter(Settings(data_dir=tmp_path, rate_limit_rpm=5, redis_url=redis_url))
    assert isinstance(shared, RedisRateLimiter) and shared.blocking
    assert type(make_limiter(Settings(data_dir=tmp_path, redis_url=redis_url))) is RateLimiter  # no limits


def test_unreachable_redis_lets_requests_through(tmp_path):
    limiter = RedisRateLimiter("redis://127.0.0.1:9/0", rpm=1)  # nothing listens on port 9
    assert limiter.acquire("k") is None and limiter.acquire("k") is None
    limiter.charge("k", 10)  # logged, not raised
