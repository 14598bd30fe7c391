"""Standard Webhooks signing (openai-api.md §9.2) and one HTTP delivery attempt.

The receiver verifies with `openai.OpenAI().webhooks.unwrap(body, headers, secret=...)`:
signature = base64(HMAC-SHA256(base64decode(secret[6:]), f"{id}.{timestamp}.{body}")), sent as
`webhook-signature: v1,<b64>` beside `webhook-id` and `webhook-timestamp`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

SECRET_PREFIX = "whsec_"
JOB_EVENTS = ("fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled")


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (the format the SDK and Standard Webhooks expect)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def event_payload(event_id: str, event_type: str, created_at: int, job_id: str) -> dict[str, Any]:
    """OpenAI's thin event: the receiver fetches the job itself."""
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": created_at,
        "data": {"id": job_id},
    }


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: str  # "HTTP 200", "HTTP 503", "ConnectError", ...
    error: str | None = None


def post(
    url: str, secret: str, msg_id: str, payload: dict[str, Any], *, timestamp: int, timeout: float
) -> Attempt:
    """One signed POST. Any 2xx acknowledges; anything else (or no answer) is a failed attempt."""
    body = body_bytes(payload)
    headers = {
        "content-type": "application/json",
        "user-agent": "tuneforge-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    try:
        resp = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return Attempt(False, type(exc).__name__, str(exc)[:500] or type(exc).__name__)
    if 200 <= resp.status_code < 300:
        return Attempt(True, f"HTTP {resp.status_code}")
    return Attempt(False, f"HTTP {resp.status_code}", resp.text[:500])
