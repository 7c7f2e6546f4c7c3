"""A fake Azure managed identity endpoint, both kinds on one loopback server (plain http, as both are):

- IMDS (VMs, scale sets, AKS): GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...
  [&client_id=...] with `Metadata: true` (without it 400 "Required metadata header not specified",
  as IMDS answers). Point AZURE_POD_IDENTITY_AUTHORITY_HOST at `url`.
- App Service / Functions: GET /msi/token?api-version=2019-08-01&resource=...[&client_id=...] with
  `X-IDENTITY-HEADER` equal to `identity_header` (else 401). Point IDENTITY_ENDPOINT at
  `app_service_endpoint`, IDENTITY_HEADER at `identity_header`.
The system-assigned identity always exists; a user-assigned one only if its client id is in
`user_assigned` (else 400 invalid_request "Identity not found"; `system_assigned = False` makes the
host one with no identity at all). Tokens are new each time (mi-token-1, ...), living `expires_in_s`;
the answer carries access_token, expires_in, expires_on, resource and token_type, numbers as strings.
"""

from __future__ import annotations

import time
from typing import ClassVar

from tests.fakes.base import FakeProvider, Recorded, Reply, json_reply

IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_PATH = "/msi/token"
VERSIONS = {IMDS_PATH: "2018-02-01", APP_SERVICE_PATH: "2019-08-01"}
USER_ASSIGNED = "9f0c0de0-0000-4000-8000-00000000a551"


def mi_error(error: str, description: str, status: int) -> Reply:
    return json_reply({"error": error, "error_description": description}, status)


class FakeManagedIdentity(FakeProvider):
    identity_header = "fake-identity-header-secret"
    expires_in_s = 3599
    system_assigned = True
    user_assigned: ClassVar[frozenset[str]] = frozenset({USER_ASSIGNED})

    def __init__(self) -> None:
        super().__init__()
        self.issued: list[tuple[str, str]] = []  # (token, client_id or "")

    def reset(self) -> None:
        super().reset()
        self.issued.clear()

    @property
    def app_service_endpoint(self) -> str:
        return self.url + APP_SERVICE_PATH

    def handle(self, request: Recorded) -> Reply:
        if request.method != "GET" or request.path not in VERSIONS:
            return mi_error("invalid_request", f"{request.path} is not an identity endpoint", 404)
        if request.path == IMDS_PATH and request.headers.get("metadata") != "true":
            return mi_error("invalid_request", "Required metadata header not specified", 400)
        if (
            request.path == APP_SERVICE_PATH
            and request.headers.get("x-identity-header") != self.identity_header
        ):
            return mi_error("unauthorized", "The X-IDENTITY-HEADER header is missing or wrong.", 401)
        query = {name: values[0] for name, values in request.query.items()}
        if query.get("api-version") != VERSIONS[request.path]:
            return mi_error("invalid_request", "Invalid or missing api-version.", 400)
        if not query.get("resource"):
            return mi_error("invalid_request", "Required audience parameter not specified", 400)
        client_id = query.get("client_id", "")
        if (client_id and client_id not in self.user_assigned) or (
            not client_id and not self.system_assigned
        ):
            return mi_error("invalid_request", "Identity not found", 400)
        with self._lock:
            token = f"mi-token-{len(self.issued) + 1}"
            self.issued.append((token, client_id))
        now = int(time.time())
        return json_reply(
            {
                "access_token": token,
                "expires_in": str(self.expires_in_s),
                "expires_on": str(now + self.expires_in_s),
                "resource": query["resource"],
                "token_type": "Bearer",
            }
        )
