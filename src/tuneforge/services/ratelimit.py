"""Per-key rate limits: token buckets for requests and tokens per minute.

`RateLimiter` keeps them in this process's memory (the embedded default: one server process keeps
exact counts). With Settings.redis_url, `RedisRateLimiter` keeps them in Redis, updated by one
atomic script per call on Redis's own clock, so several API processes behind a load balancer
share one budget per key. `make_limiter(settings)` picks.

The requests bucket is taken before a request runs. Tokens are only known once a completion is
done, so the tokens bucket is checked before (an empty bucket refuses the request) and charged
after, by `charge_current`, which the usage recorder calls from inside the request; the request's
bucket travels there in a context variable set by the middleware.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from tuneforge.config import Settings

log = logging.getLogger("tuneforge.ratelimit")

MAX_KEYS = 100_000  # buckets kept (least recently used dropped): bounded memory for any traffic


@dataclass
class Bucket:
    capacity: float
    tokens: float
    updated: float

    def refill(self, t: float) -> None:
        rate = self.capacity / 60.0
        self.tokens = min(self.capacity, self.tokens + (t - self.updated) * rate)
        self.updated = t

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        missing = amount - self.tokens
        return 0.0 if missing <= 0 else missing / (self.capacity / 60.0)


@dataclass(frozen=True)
class Refusal:
    kind: str  # "requests" | "tokens" (OpenAI's error `type`)
    limit: int
    retry_after: float  # seconds


class _Account:
    def __init__(self, limiter: RateLimiter, key: str):
        self.limiter, self.key = limiter, key

    def charge(self, tokens: int) -> None:
        self.limiter.charge(self.key, tokens)


_current: ContextVar[_Account | None] = ContextVar("tuneforge_ratelimit_account", default=None)


class RateLimiter:
    blocking = False  # acquire/charge only touch memory: fine on an event loop

    def __init__(self, rpm: int = 0, tpm: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm, self.tpm, self._clock = rpm, tpm, clock
        self._lock = threading.Lock()
        self._requests: OrderedDict[str, Bucket] = OrderedDict()
        self._tokens: OrderedDict[str, Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rpm > 0 or self.tpm > 0

    def _bucket(self, table: OrderedDict[str, Bucket], key: str, capacity: int, t: float) -> Bucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = Bucket(capacity, capacity, t)
            if len(table) > MAX_KEYS:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
            bucket.refill(t)
        return bucket

    def acquire(self, key: str) -> Refusal | None:
        """Take one request from `key`'s budget, or say how long to wait."""
        t = self._clock()
        with self._lock:
            if self.tpm > 0:
                tokens = self._bucket(self._tokens, key, self.tpm, t)
                if tokens.tokens < 1:
                    return Refusal("tokens", self.tpm, tokens.wait_for(1))
            if self.rpm > 0:
                requests = self._bucket(self._requests, key, self.rpm, t)
                if requests.tokens < 1:
                    return Refusal("requests", self.rpm, requests.wait_for(1))
                requests.tokens -= 1
        return None

    def charge(self, key: str, tokens: int) -> None:
        """Spend `tokens` (may go negative: the next requests wait until it refills)."""
        if self.tpm <= 0 or tokens <= 0:
            return
        t = self._clock()
        with self._lock:
            self._bucket(self._tokens, key, self.tpm, t).tokens -= tokens

    def bind(self, key: str) -> Token[_Account | None]:
        """Make `key` the current request's account (for `charge_current`); returns a reset token."""
        return _current.set(_Account(self, key))

    @staticmethod
    def unbind(token: Token[_Account | None]) -> None:
        _current.reset(token)


# KEYS: the key's tokens and requests buckets (hashes of tokens, ts). ARGV: tpm, rpm.
# -> nil (allowed: one request taken) or {kind, seconds to wait}. Floats go back as strings (Lua
# numbers would be truncated to integers).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local function level(key, cap)
  local v = redis.call('HMGET', key, 'tokens', 'ts')
  if not v[1] then return cap end
  return math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60)
end
local tpm, rpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 then
  local tok = level(KEYS[1], tpm)
  if tok < 1 then return {'tokens', tostring((1 - tok) * 60 / tpm)} end
end
if rpm > 0 then
  local req = level(KEYS[2], rpm)
  if req < 1 then return {'requests', tostring((1 - req) * 60 / rpm)} end
  req = req - 1
  redis.call('HSET', KEYS[2], 'tokens', tostring(req), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[2], math.ceil((rpm - req) * 60 / rpm) + 1)
end
return false
"""
# KEYS: the tokens bucket. ARGV: tpm, tokens spent (may overdraw: later requests wait).
_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local cap, spent = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tok = cap
if v[1] then tok = math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60) end
tok = tok - spent
redis.call('HSET', KEYS[1], 'tokens', tostring(tok), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((cap - tok) * 60 / cap) + 1)
return 1
"""


class RedisRateLimiter(RateLimiter):
    """The same buckets in Redis, shared by every process that uses the same Redis. An idle
    bucket expires once it would be full again, so Redis holds only keys in recent use. If Redis
    cannot be reached a request is let through (logged): limits protect the service, they are
    not a reason for it to be down."""

    blocking = True  # each call is a network round trip: callers on an event loop use a thread

    def __init__(self, url: str, rpm: int = 0, tpm: int = 0, prefix: str = "tuneforge:rl") -> None:
        import redis

        super().__init__(rpm, tpm)
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._acquire: Any = self._redis.register_script(_ACQUIRE)
        self._charge: Any = self._redis.register_script(_CHARGE)
        self._prefix = prefix

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}:t:{key}", f"{self._prefix}:r:{key}"]

    def acquire(self, key: str) -> Refusal | None:
        try:
            out = self._acquire(keys=self._keys(key), args=[self.tpm, self.rpm])
        except Exception:
            log.exception("rate limits: Redis unreachable; letting the request through")
            return None
        if not out:
            return None
        kind = out[0].decode()
        return Refusal(kind, self.tpm if kind == "tokens" else self.rpm, float(out[1]))

    def charge(self, key: str, tokens: int) -> None:
        if self.tpm <= 0 or tokens <= 0:
            return
        try:
            self._charge(keys=self._keys(key)[:1], args=[self.tpm, tokens])
        except Exception:
            log.exception("rate limits: Redis unreachable; %d tokens not charged", tokens)


def make_limiter(settings: Settings) -> RateLimiter:
    """In this process's memory, or shared through Redis when Settings.redis_url is set."""
    if settings.redis_url and (settings.rate_limit_rpm > 0 or settings.rate_limit_tpm > 0):
        return RedisRateLimiter(settings.redis_url, settings.rate_limit_rpm, settings.rate_limit_tpm)
    return RateLimiter(settings.rate_limit_rpm, settings.rate_limit_tpm)


def charge_current(tokens: int) -> None:
    """Charge the current request's key (no-op outside a rate-limited request)."""
    account = _current.get()
    if account is not None:
        account.charge(tokens)


def retry_after_headers(seconds: float) -> dict[str, str]:
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }
