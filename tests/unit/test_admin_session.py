"""The admin token (service/admin_token.py) and console sessions (service/admin_session.py)."""

from __future__ import annotations

import multiprocessing
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from service.admin_session import (
    COOKIE_NAME,
    SESSION_SECRET_FILE,
    AdminSessions,
    cookie_header_of,
    session_cookie_values,
    session_secret,
    set_cookie,
)
from service.admin_token import (
    DEV_ADMIN_TOKEN_FILE,
    AdminToken,
    configured_admin_token,
    ensure_dev_admin_token,
    new_admin_token,
    token_sha256,
)
from service.config import Settings, SettingsError, load_settings

TOKEN = "mg_admin_" + "t" * 43
NOW = 1_800_000_000.0


def sessions(token: str = TOKEN, secret: bytes = b"s" * 32, ttl_s: float = 3600) -> AdminSessions:
    return AdminSessions(AdminToken(token_sha256(token)), secret, ttl_s)


def test_the_token_matches_itself_only() -> None:
    token = AdminToken(token_sha256(TOKEN))
    assert token.matches(TOKEN)
    for other in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), token.sha256, "mg_live_" + "t" * 43):
        assert not token.matches(other)


def test_the_token_id_names_the_token_without_revealing_it() -> None:
    token = AdminToken(token_sha256(TOKEN))
    assert token.id == "adm_" + token_sha256(TOKEN)[:12]
    assert TOKEN not in token.id and TOKEN[9:21] not in token.id


def test_the_token_comes_from_the_environment_then_its_hash_then_the_dev_file(tmp_path: Path) -> None:
    env = {"MG_DATA_DIR": str(tmp_path)}
    assert configured_admin_token(load_settings(env)) is None
    dev = ensure_dev_admin_token(tmp_path)
    assert configured_admin_token(load_settings(env)) == AdminToken(token_sha256(dev))
    hashed = {**env, "MG_ADMIN_TOKEN_SHA256": token_sha256(TOKEN)}
    assert configured_admin_token(load_settings(hashed)) == AdminToken(token_sha256(TOKEN))
    both = {**hashed, "MG_ADMIN_TOKEN": "mg_admin_other"}
    assert configured_admin_token(load_settings(both)) == AdminToken(token_sha256("mg_admin_other"))


def test_a_hash_that_is_not_a_sha256_is_refused() -> None:
    for wrong in ("abc", "g" * 64, token_sha256(TOKEN).upper(), TOKEN):
        with pytest.raises(SettingsError, match="MG_ADMIN_TOKEN_SHA256"):
            load_settings({"MG_ADMIN_TOKEN_SHA256": wrong})


def test_the_dev_token_is_made_once_private_and_reused(tmp_path: Path) -> None:
    # Processes, as the workers of a gateway are, all asking at once.
    with ProcessPoolExecutor(8, mp_context=multiprocessing.get_context("fork")) as pool:
        made = list(pool.map(ensure_dev_admin_token, [tmp_path] * 16))
    assert len(set(made)) == 1 and made[0].startswith("mg_admin_") and len(made[0]) > 40
    assert stat.S_IMODE((tmp_path / DEV_ADMIN_TOKEN_FILE).stat().st_mode) == 0o600
    assert ensure_dev_admin_token(tmp_path) == made[0]
    assert new_admin_token() != new_admin_token()


def test_a_session_verifies_until_it_expires() -> None:
    admin = sessions(ttl_s=600)
    value, claims = admin.issue(now=NOW)
    assert claims.token_id == admin.token.id and claims.expires_at == NOW + 600
    assert admin.verify(value, now=NOW + 599) == claims
    assert admin.verify(value, now=NOW + 600) is None


def test_a_tampered_or_foreign_session_is_refused() -> None:
    admin = sessions()
    value, _ = admin.issue(now=NOW)
    version, token_id, expires, nonce, signature = value.split(".")
    forged = [
        f"{version}.{token_id}.{int(expires) + 3600}.{nonce}.{signature}",  # a longer life
        f"{version}.adm_000000000000.{expires}.{nonce}.{signature}",  # another token
        f"{version}.{token_id}.{expires}.{nonce}x.{signature}",
        f"{version}.{token_id}.{expires}.{nonce}.{signature[:-1]}",
        f"v2.{token_id}.{expires}.{nonce}.{signature}",
        value + ".extra",
        "",
        "....",
        "v1.a.b.c.d",
    ]
    for wrong in forged:
        assert admin.verify(wrong, now=NOW) is None, wrong
    # signed with another secret (another gateway), or for another admin token (the token changed)
    assert sessions(secret=b"other" * 8).verify(value, now=NOW) is None
    assert sessions(token="mg_admin_rotated").verify(value, now=NOW) is None


def test_the_csrf_value_is_bound_to_its_session() -> None:
    admin = sessions()
    _, first = admin.issue(now=NOW)
    _, second = admin.issue(now=NOW)
    assert admin.csrf_ok(first, admin.csrf_token(first))
    assert not admin.csrf_ok(first, admin.csrf_token(second))
    assert not admin.csrf_ok(first, "")
    assert not sessions(secret=b"other" * 8).csrf_ok(first, admin.csrf_token(first))


def test_the_session_is_found_among_other_cookies_and_other_gateways_sessions() -> None:
    admin, other_gateway = sessions(), sessions(secret=b"o" * 32)
    mine, claims = admin.issue(now=NOW)
    theirs, _ = other_gateway.issue(now=NOW)
    header = f'theme=dark; {COOKIE_NAME}={theirs}; broken; a="b;c"; {COOKIE_NAME}={mine}'
    assert session_cookie_values(header) == [theirs, mine]
    assert admin.verify_cookie_header(header, now=NOW) == claims
    assert admin.verify_cookie_header(f"{COOKIE_NAME}={theirs}", now=NOW) is None
    assert admin.verify_cookie_header("", now=NOW) is None
    # HTTP/2 sends each cookie as its own header field
    split = cookie_header_of(
        [("cookie", "theme=dark"), ("x-other", "1"), ("cookie", f"{COOKIE_NAME}={mine}")]
    )
    assert admin.verify_cookie_header(split, now=NOW) == claims


def test_the_cookie_is_http_only_strict_and_secure_over_tls() -> None:
    plain = set_cookie("v", 600, secure=False)
    assert plain == f"{COOKIE_NAME}=v; Path=/; Max-Age=600; HttpOnly; SameSite=Strict"
    assert set_cookie("v", 600, secure=True).endswith("; Secure")
    assert "Max-Age=0" in set_cookie("", 0, secure=False)


def test_the_session_secret_is_generated_once_private_or_configured(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    secret = session_secret(settings)
    assert len(secret) >= 32 and session_secret(settings) == secret
    assert stat.S_IMODE((tmp_path / SESSION_SECRET_FILE).stat().st_mode) == 0o600
    assert session_secret(Settings(data_dir=tmp_path, admin_session_secret="shared")) == b"shared"


def test_no_admin_token_means_no_sessions(tmp_path: Path) -> None:
    assert AdminSessions.from_settings(Settings(data_dir=tmp_path)) is None
    made = AdminSessions.from_settings(Settings(data_dir=tmp_path, admin_token=TOKEN))
    assert made is not None and made.token.matches(TOKEN)
