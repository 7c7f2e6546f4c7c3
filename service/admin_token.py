"""The admin token: the credential of the admin API (/v1/admin/...) and of console sign-in.

Where it comes from, first found wins: MG_ADMIN_TOKEN (the token itself), MG_ADMIN_TOKEN_SHA256
(its SHA-256 in hex, so a config file can name it without holding the secret), or the data dir's
`admin-token` file, which `mg serve` writes (0600) on the first start of a gateway on the embedded
store, with the dev project, and reuses on later starts. None of them: the admin API is off and
answers 404.

Only the SHA-256 is kept in memory and compared, with `hmac.compare_digest` (constant time). As
with API keys (service/keys.py), a plain SHA-256 is right for a 256-bit random token; an operator's
own MG_ADMIN_TOKEN should be as random (`mg_admin_` + `secrets.token_urlsafe(32)`). The token never
appears in a log line or a metric: the API names it by its id, `adm_` + the first 12 hex digits of
its hash, which says which token acted without helping anyone guess it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from service.config import Settings
from service.data_dir import create_private_once

TOKEN_PREFIX = "mg_admin_"
DEV_ADMIN_TOKEN_FILE = "admin-token"  # in the data dir
ID_HEX_DIGITS = 12


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_admin_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AdminToken:
    """The configured admin token, as its SHA-256 (hex)."""

    sha256: str

    @property
    def id(self) -> str:
        return "adm_" + self.sha256[:ID_HEX_DIGITS]

    def matches(self, presented: str) -> bool:
        """Whether `presented` is the token. Both sides are hashed first, so the comparison runs
        over two 64-character strings in constant time whatever was presented."""
        return hmac.compare_digest(token_sha256(presented), self.sha256)


def configured_admin_token(settings: Settings) -> AdminToken | None:
    if settings.admin_token:
        return AdminToken(token_sha256(settings.admin_token))
    if settings.admin_token_sha256:
        return AdminToken(settings.admin_token_sha256)
    saved = dev_admin_token_path(settings.data_dir)
    if saved.is_file():
        token = saved.read_text().strip()
        if token:
            return AdminToken(token_sha256(token))
    return None


def dev_admin_token_path(data_dir: Path) -> Path:
    return data_dir / DEV_ADMIN_TOKEN_FILE


def ensure_dev_admin_token(data_dir: Path) -> str:
    """The dev setup's admin token: the one saved in the data dir, else a new one saved there (0600;
    of two processes racing, one file wins and both return its token)."""
    path = dev_admin_token_path(data_dir)
    if not path.is_file():
        create_private_once(path, new_admin_token() + "\n")
    return path.read_text().strip()
