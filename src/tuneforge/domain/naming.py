"""Fine-tuned model names, as OpenAI spells them (openai-api.md §6.1):

    ft:{base}:{org}:{suffix}:{id8}                       the final model
    ft:{base}:{org}:{suffix}:{ckpt8}:ckpt-step-{N}       an intermediate checkpoint

`org` is a slug of the project's name (OpenAI uses the organisation's slug, `personal` for
personal accounts): tuneforge scopes models per project, so the project is the owner a user sees.
`id8` is derived from the job id (deterministic, so the checkpoint of the final step can carry the
final name before the job finishes); `ckpt8` is random per checkpoint, different from `id8`.
"""

from __future__ import annotations

import hashlib
import re
import string

from tuneforge.ids import new_id

_ALNUM = string.ascii_letters + string.digits


def org_slug(project_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", project_name.lower()).strip("-")
    return slug or "personal"


def base_of(model: str) -> str:
    """The base model segment: `ft:base:org:…` (continued training) keeps the original base."""
    if model.startswith("ft:"):
        return model.split(":")[1]
    return model


def job_id8(job_id: str) -> str:
    digest = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(8):
        digest, r = divmod(digest, len(_ALNUM))
        out.append(_ALNUM[r])
    return "".join(out)


def model_name(model: str, project_name: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base_of(model)}:{org_slug(project_name)}:{suffix or ''}:{job_id8(job_id)}"


def checkpoint_name(model: str, project_name: str, suffix: str | None, step: int) -> str:
    ckpt8 = new_id("", 8)
    return f"ft:{base_of(model)}:{org_slug(project_name)}:{suffix or ''}:{ckpt8}:ckpt-step-{step}"
