"""Microsoft Entra ID access tokens, cached and renewed off the request path: an app registration's
(OAuth 2.0 client credentials), or a managed identity's.

POST {authority}/{tenant}/oauth2/v2.0/token with grant_type=client_credentials, client_id, scope and
the app's proof (form-encoded): client_secret, or for workload identity (AKS) client_assertion_type
jwt-bearer with client_assertion, the federated token file's content. It answers {token_type:
Bearer, expires_in, access_token}; an error {error, error_description} (AADSTS codes). The settings
are azure-identity's (EnvironmentCredential's and WorkloadIdentityCredential's): AZURE_TENANT_ID,
AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST (default
https://login.microsoftonline.com; sovereign clouds have their own).

Written here on the gateway's HTTP client rather than with azure-identity: azure-identity's client
credentials flow goes through MSAL, whose releases cap `cryptography` below the version the gateway
pins, and through a blocking `requests` transport that would need a thread per refresh; the request
itself is one documented form POST.

Without a client secret or federated token, the token is the host's managed identity's
(managed_identity.py says where it answers); it is held and renewed the same way.

The client-credentials token endpoint must be https. Its certificate is checked against the
system's CAs, which OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR replace (read when the adapter is made).
Either kind of token is renewed in the background from RENEW_AHEAD_S before it expires
(azure-identity's own margin), and a call waits for one only when none is held or it expires within
WAIT_AHEAD_S (renewing.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from service.errors import UpstreamError
from service.providers.http import HttpClient, TransportError
from service.providers.managed_identity import AccessToken, ManagedIdentity, managed_token
from service.providers.renewing import Renewing
from service.providers.upstream import provider_message

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
RENEW_AHEAD_S = 5 * 60
WAIT_AHEAD_S = 30
TIMEOUT_S = 30.0
FORM = "application/x-www-form-urlencoded"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class ClientProof:
    """How the app proves it is itself: its client secret, or a federated token (workload identity:
    a Kubernetes service account token the cluster rotates in a file, read again for each request)."""

    secret: str = ""
    federated_token_file: str = ""

    def fields(self) -> dict[str, str]:
        if self.secret:
            return {"client_secret": self.secret}
        assertion = Path(self.federated_token_file).read_text().strip()
        return {"client_assertion_type": JWT_BEARER, "client_assertion": assertion}


def renew_due(token: AccessToken) -> bool:
    return token.expires_at - time.time() < RENEW_AHEAD_S


def expiring(token: AccessToken) -> bool:
    return token.expires_at - time.time() < WAIT_AHEAD_S


class BearerTokens:
    """`Authorization: Bearer` headers from tokens a subclass fetches, renewed off the request path."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._client = HttpClient({}, follow_redirects=False, verify=ssl.create_default_context())
        self._token = Renewing(provider, self._fetch, renew_due, expiring)

    async def header(self) -> dict[str, str]:
        token = await self._token.get()
        return {"Authorization": f"Bearer {token.value}"}

    async def _fetch(self) -> AccessToken:
        raise NotImplementedError

    def _failed(self, detail: str, reason: str = "") -> UpstreamError:
        """Logged in full for the operator; the caller's error names only the kind of failure (the
        token endpoint's description may name the tenant and the app)."""
        log.warning("%s: no Microsoft Entra ID token: %s", self._provider, detail)
        suffix = f" ({reason})" if reason else ""
        return UpstreamError(
            f"{self._provider} could not get a Microsoft Entra ID token{suffix}; see the log."
        )

    async def aclose(self) -> None:
        await self._token.aclose()
        await self._client.aclose()


class EntraTokens(BearerTokens):
    """Tokens for `scope` from a tenant's token endpoint (client credentials)."""

    def __init__(
        self, provider: str, authority: str, tenant: str, client_id: str, proof: ClientProof, scope: str
    ) -> None:
        authority = authority.rstrip("/") or DEFAULT_AUTHORITY
        if urlsplit(authority).scheme != "https":
            raise ValueError(f"AZURE_AUTHORITY_HOST must be an https URL, not {authority!r}")
        super().__init__(provider)
        self._url = f"{authority}/{quote(tenant, safe='')}/oauth2/v2.0/token"
        self._fields = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope}
        self._proof = proof

    async def _fetch(self) -> AccessToken:
        requested_at = time.time()
        try:
            proof = await asyncio.to_thread(self._proof.fields)
        except OSError as exc:
            raise self._failed(f"cannot read the federated token file ({exc})") from None
        form = urlencode({**self._fields, **proof}).encode()  # the HTTP client's forms are multipart
        try:
            response = await self._client.request(
                "POST", self._url, TIMEOUT_S, content=form, headers={"Content-Type": FORM}
            )
        except (TransportError, TimeoutError) as exc:
            raise self._failed(f"cannot reach {self._url} ({exc!r})", "unreachable") from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not response.is_success:
            described = payload.get("error_description") if isinstance(payload, dict) else None
            detail = described if isinstance(described, str) else provider_message(payload, response.text)
            code = payload.get("error") if isinstance(payload, dict) else None
            raise self._failed(
                f"refused ({response.status}): {detail}", f"{response.status} {code or ''}".strip()
            )
        token = payload.get("access_token") if isinstance(payload, dict) else None
        expires_in = payload.get("expires_in") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token or not isinstance(expires_in, (int, str)):
            raise self._failed(f"answered no access token: {response.text[:200]}", "malformed answer")
        try:
            lifetime = int(expires_in)
        except ValueError:
            raise self._failed(f"answered no token lifetime: {expires_in!r}", "malformed answer") from None
        return AccessToken(token, requested_at + lifetime)


class ManagedIdentityTokens(BearerTokens):
    """Tokens for `resource` from this host's managed identity."""

    def __init__(self, provider: str, identity: ManagedIdentity, resource: str) -> None:
        super().__init__(provider)
        self._url, self._headers = identity.request(resource)

    async def _fetch(self) -> AccessToken:
        requested_at = time.time()
        endpoint = self._url.partition("?")[0]
        try:
            response = await self._client.request("GET", self._url, TIMEOUT_S, headers=self._headers)
        except (TransportError, TimeoutError) as exc:
            raise self._failed(
                f"cannot reach the managed identity at {endpoint} ({exc!r})", "unreachable"
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not response.is_success:
            detail = provider_message(payload, response.text)
            raise self._failed(
                f"the managed identity refused ({response.status}): {detail}", str(response.status)
            )
        token = managed_token(payload, requested_at)
        if token is None:
            raise self._failed(
                f"the managed identity answered no token: {response.text[:200]}", "malformed answer"
            )
        return token
