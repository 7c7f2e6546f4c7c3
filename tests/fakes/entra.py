"""A fake Microsoft Entra ID token endpoint (OAuth 2.0 client credentials), served over https as the
real one is only reachable that way.

POST /{tenant}/oauth2/v2.0/token, form-encoded grant_type=client_credentials, client_id, scope, and
client_secret or (workload identity) client_assertion_type jwt-bearer with client_assertion, which
must be `assertion`; answers {token_type: Bearer, expires_in, ext_expires_in, access_token}, each
token new (entra-token-1, entra-token-2, ...) and living `expires_in_s`. Errors as Entra ID sends
them, {error, error_description (AADSTS...), error_codes}: an unknown tenant 400 invalid_request
(AADSTS90002), a wrong client or secret 401 invalid_client (AADSTS7000215), another grant 400
unsupported_grant_type, a scope without /.default 400 invalid_scope.
"""

from __future__ import annotations

import ssl
import threading
from urllib.parse import parse_qs

from tests.fakes.base import FakeProvider, Recorded, Reply, json_reply
from tests.support.tls import LoopbackCertificate

TENANT = "72f988bf-0000-4000-8000-2d7cd011db47"
CLIENT_ID = "b1e7c0de-0000-4000-8000-0000000000a1"
CLIENT_SECRET = "entra-fake-client-secret"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def entra_error(error: str, code: int, description: str, status: int) -> Reply:
    return json_reply(
        {"error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code]}, status
    )


class FakeEntraTokenEndpoint(FakeProvider):
    expires_in_s = 3599
    assertion = ""  # the federated token (workload identity) it accepts; "" none

    def __init__(self, certificate: LoopbackCertificate) -> None:
        super().__init__()
        self._context = certificate.server_context()
        self.issued: list[str] = []
        self._handed_out = threading.Condition(self._lock)

    def tls_context(self) -> ssl.SSLContext | None:
        return self._context

    @property
    def authority(self) -> str:
        return self.url

    def reset(self) -> None:
        super().reset()
        self.issued.clear()

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Block until `count` tokens have been handed out (True) or `timeout_s` passed (False)."""
        with self._handed_out:
            return self._handed_out.wait_for(lambda: len(self.issued) >= count, timeout_s)

    def handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != f"/{TENANT}/oauth2/v2.0/token":
            return entra_error("invalid_request", 90002, f"Tenant '{request.path}' not found.", 400)
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return entra_error("invalid_request", 900144, "The request body must contain 'grant_type'.", 400)
        form = {name: values[0] for name, values in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return entra_error(
                "unsupported_grant_type", 70003, "The app requested an unsupported grant.", 400
            )
        if form.get("client_assertion_type") == JWT_BEARER:
            if (
                form.get("client_id") != CLIENT_ID
                or not self.assertion
                or form.get("client_assertion") != self.assertion
            ):
                return entra_error(
                    "invalid_client", 700024, "Client assertion is not within its valid time range.", 401
                )
        elif (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return entra_error(
                "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent "
                "in the request is the client secret value, not the client secret ID.", 401
            )  # fmt: skip
        if not form.get("scope", "").endswith("/.default"):
            return entra_error("invalid_scope", 1002012, "The provided value for scope is not valid.", 400)
        with self._lock:
            token = f"entra-token-{len(self.issued) + 1}"
            self.issued.append(token)
            self._handed_out.notify_all()
        lifetime = int(self.expires_in_s)
        return json_reply(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }
        )
