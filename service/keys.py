"""API keys: `mg_live_` + 32 random bytes (base64url). Only the SHA-256 of a key is stored.

A plain SHA-256 (not a slow password hash) is right here: the keys are 256-bit random values, so
there is nothing for a brute-force search to guess, and the lookup runs on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from ulid import ULID

from service.stores.base import ApiKey

KEY_PREFIX = "mg_live_"
_KEY_SHAPE = re.compile(r"^mg_live_[A-Za-z0-9_-]{43,128}$")
DISPLAY_PREFIX_CHARS = 12


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return bool(_KEY_SHAPE.match(token))


def new_key(project_id: str) -> tuple[str, ApiKey]:
    """(the key to hand out once, the record to store)."""
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=f"key_{ULID()}",
        project_id=project_id,
        key_hash=hash_key(token),
        prefix=token[:DISPLAY_PREFIX_CHARS],
        created_at=time.time(),
    )
    return token, record
