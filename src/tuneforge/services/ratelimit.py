"""Per-key rate limits: token buckets for requests and tokens per minute, in this process's memory.

One server process keeps exact counts; several server processes would each allow the full rate
(a shared store such as Redis or the database would be needed for that, and is not done here).

The requests bucket is taken before a request runs. Tokens are only known once a completion is
done, so the tokens bucket is checked before (an empty bucket refuses the request) and charged
after, by `charge_current`, which the usage recorder calls from inside the request; the request's
bucket travels there in a context variable set by the middleware.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass

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
