"""Where a managed identity answers on this host, and what it answers (no HTTP client loaded here: the
settings' probe runs in the supervisor too).

A managed identity is Microsoft Entra ID's identity for an Azure resource, the app's own when it has
no client secret or federated token (ManagedIdentityCredential's sources in azure-identity):
- App Service and Functions: the platform's local endpoint, GET {IDENTITY_ENDPOINT}?api-version=
  2019-08-01&resource=... with the `X-IDENTITY-HEADER: {IDENTITY_HEADER}` header (both variables are
  set by the platform);
- elsewhere (VMs, scale sets, AKS node identities): the instance metadata service, GET
  http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=... with
  `Metadata: true`. AZURE_POD_IDENTITY_AUTHORITY_HOST, azure-identity's name for it, moves it (the
  tests' fake listens on loopback; no test ever reaches 169.254.169.254).
AZURE_CLIENT_ID picks a user-assigned identity (`client_id`); without it the system-assigned one
answers. Both answer {access_token, expires_on (epoch seconds), expires_in (IMDS), resource,
token_type}, the numbers as strings. Service Fabric's and Azure Arc's endpoints
(IDENTITY_SERVER_THUMBPRINT, IMDS_ENDPOINT) are not supported.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

log = logging.getLogger(__name__)

APP_SERVICE_ENDPOINT = "IDENTITY_ENDPOINT"  # set by App Service and Functions
APP_SERVICE_HEADER = "IDENTITY_HEADER"
APP_SERVICE_VERSION = "2019-08-01"
IMDS_HOST_ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"  # azure-identity's name for moving IMDS
IMDS_HOST = "http://169.254.169.254"
IMDS_PATH = "/metadata/identity/oauth2/token"
IMDS_VERSION = "2018-02-01"
PROBE_TIMEOUT_S = 1.0
MAX_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float  # time.time()


@dataclass(frozen=True)
class ManagedIdentity:
    """Where this host's managed identity answers, and which identity to ask for."""

    client_id: str = ""  # a user-assigned identity; "" the system-assigned one
    app_service_endpoint: str = ""  # IDENTITY_ENDPOINT, with IDENTITY_HEADER
    app_service_header: str = ""
    imds_host: str = IMDS_HOST

    @classmethod
    def from_settings(cls, settings: Mapping[str, object]) -> ManagedIdentity:
        def text(name: str) -> str:
            return str(settings.get(name) or "")

        return cls(
            text("AZURE_CLIENT_ID"),
            text(APP_SERVICE_ENDPOINT),
            text(APP_SERVICE_HEADER),
            text(IMDS_HOST_ENV).rstrip("/") or IMDS_HOST,
        )

    def request(self, resource: str) -> tuple[str, dict[str, str]]:
        """(URL, headers) of the GET that asks for a token for `resource`."""
        query = {"resource": resource, **({"client_id": self.client_id} if self.client_id else {})}
        if self.app_service_endpoint and self.app_service_header:
            url = f"{self.app_service_endpoint}?{urlencode({'api-version': APP_SERVICE_VERSION, **query})}"
            return url, {"X-IDENTITY-HEADER": self.app_service_header}
        url = f"{self.imds_host}{IMDS_PATH}?{urlencode({'api-version': IMDS_VERSION, **query})}"
        return url, {"Metadata": "true"}


def managed_token(payload: object, requested_at: float) -> AccessToken | None:
    """The token in a managed identity endpoint's answer (numbers come as strings), or None."""
    if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
        return None
    if not payload["access_token"]:
        return None
    try:
        if str(payload.get("expires_on") or "").isdigit():
            return AccessToken(payload["access_token"], float(payload["expires_on"]))
        return AccessToken(payload["access_token"], requested_at + float(payload["expires_in"]))
    except (KeyError, TypeError, ValueError):
        return None


def managed_identity_answers(settings: Mapping[str, object], resource: str) -> bool:
    """Whether this host has a managed identity that gives a token for `resource`: on App Service the
    platform's variables say so; elsewhere IMDS is asked (blocking, PROBE_TIMEOUT_S at most off
    Azure: run only when settings load, before any event loop)."""
    import urllib.request  # here: the supervisor loads this module, and rarely probes

    identity = ManagedIdentity.from_settings(settings)
    if identity.app_service_endpoint and identity.app_service_header:
        return True
    url, headers = identity.request(resource)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # IMDS is never proxied
    try:
        with direct.open(urllib.request.Request(url, headers=headers), timeout=PROBE_TIMEOUT_S) as answer:
            payload = json.loads(answer.read(MAX_PROBE_BYTES))
    except (OSError, ValueError) as exc:  # unreachable, refused (no identity: 400), not JSON
        log.info("no managed identity answers at %s (%r)", url.partition("?")[0], exc)
        return False
    return managed_token(payload, time.time()) is not None
