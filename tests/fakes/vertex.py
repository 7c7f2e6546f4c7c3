"""A fake Vertex AI (Imagen :predict, Gemini :generateContent) with its own OAuth2 token endpoint.

- The fake is also the service account's token endpoint: `running()` writes a service-account JSON
  file (a fresh RSA key, `token_uri` pointing here) that GOOGLE_APPLICATION_CREDENTIALS names, so
  google-auth's real JWT-bearer flow runs against loopback and no metadata server is ever asked.
  POST /token verifies the assertion as Google does (RS256 signature by the account's key, kid,
  issuer, Google's token audience, the cloud-platform scope, a lifetime of at most an hour) and issues
  an access token; `token_requests` counts the refreshes.
- POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predict or
  :generateContent needs `Authorization: Bearer <an issued token>` (401 UNAUTHENTICATED otherwise),
  the fake's project (`api_key`: GOOGLE_CLOUD_PROJECT) and location. Bodies and answers are the
  Gemini fake's (tests/fakes/google.py), with Vertex's Imagen parameters (schemas/vertex.json): seed
  only with addWatermark false, `prompt` (the enhanced prompt) in predictions with enhancePrompt.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.base import FakeProvider, Recorded, Reply, check_body, json_reply
from tests.fakes.google import GEMINI_MODELS, IMAGEN_MODELS, FakeGoogle, error

PATH = re.compile(
    r"^/v1/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+):(predict|generateContent)$"
)
CLIENT_EMAIL = "mg-gateway@mg-fake-project.iam.gserviceaccount.com"
KEY_ID = "fake0key0id"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AUDIENCE = "https://oauth2.googleapis.com/token"  # what Google's token endpoint expects, whatever its URL
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def oauth_error(code: str, description: str) -> Reply:
    return json_reply({"error": code, "error_description": description}, 400)


class FakeVertex(FakeGoogle):
    PROVIDER = "vertex"
    BASE_PATH = ""
    SMOKE_MODEL = "vertex/imagen-4.0-generate-001"
    api_key = "mg-fake-project"  # GOOGLE_CLOUD_PROJECT
    location = "us-central1"
    token_lifetime_s = 3599
    PREDICT_SCHEMA = ("vertex.json", "VertexPredictRequest")

    def __init__(self) -> None:
        super().__init__()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._dir = Path(tempfile.mkdtemp(prefix="fake-vertex-"))
        self._credentials_file = self._dir / "service-account.json"
        self.issued: set[str] = set()
        self.token_requests = 0
        self._tokens = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        self.issued.clear()
        self.token_requests = 0

    @property
    def credentials_file(self) -> Path:
        """The service-account JSON file (written by `running()`)."""
        return self._credentials_file

    def settings(self) -> dict[str, str]:
        return {"GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials_file)}

    @contextmanager
    def running(self) -> Iterator[FakeProvider]:
        with super().running() as fake:
            pem = self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            account = {
                "type": "service_account",
                "project_id": self.api_key,
                "private_key_id": KEY_ID,
                "private_key": pem.decode(),
                "client_email": CLIENT_EMAIL,
                "client_id": "100000000000000000001",
                "token_uri": f"{self.url}/token",
            }
            self.credentials_file.write_text(json.dumps(account))
            try:
                yield fake
            finally:
                shutil.rmtree(self._dir, ignore_errors=True)

    def handle(self, request: Recorded) -> Reply:
        if (request.method, request.path) == ("POST", "/token"):
            return self._token(request)
        authorization = request.headers.get("authorization", "")
        if authorization.removeprefix("Bearer ") not in self.issued:
            return error(UNAUTHENTICATED, 401)
        match = PATH.match(request.path)
        if request.method != "POST" or match is None:
            return error(f"The requested URL {request.path} was not found on this server.", 404)
        project, location, model, method = match.groups()
        if project != self.api_key:
            resource = f"//aiplatform.googleapis.com/projects/{project}"
            return error(f"Permission 'aiplatform.endpoints.predict' denied on resource '{resource}'.", 403)
        if location != self.location:
            return error(f"Publisher Model `projects/{project}/locations/{location}/publishers/google/models/"
                         f"{model}` not found.", 404)  # fmt: skip
        if model not in (GEMINI_MODELS if method == "generateContent" else IMAGEN_MODELS):
            return error(f"Publisher Model `projects/{project}/locations/{location}/publishers/google/models/"
                         f"{model}` not found.", 404)  # fmt: skip
        if not isinstance(request.json, dict):
            return error("Invalid JSON payload received.")
        if method == "predict":
            return self._predict(model, request.json)
        return self._generate_content(model, request.json)

    def _check_imagen_parameters(self, parameters: dict[str, Any]) -> Reply | None:
        check_body("vertex.json", "VertexImagenParameters", parameters)
        if "seed" in parameters and parameters.get("addWatermark", True):
            return error("Seed is not supported when watermark is enabled. Set addWatermark to false.")
        return None

    def _token(self, request: Recorded) -> Reply:
        self.token_requests += 1
        form = {name: values[0] for name, values in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != JWT_GRANT:
            return oauth_error("unsupported_grant_type", "Invalid grant_type.")
        try:
            header_part, claims_part, signature = form.get("assertion", "").split(".")
            header, claims = json.loads(_unb64(header_part)), json.loads(_unb64(claims_part))
            self._key.public_key().verify(
                _unb64(signature),
                f"{header_part}.{claims_part}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature):
            return oauth_error("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if (header.get("alg"), header.get("kid")) != ("RS256", KEY_ID) or claims.get("iss") != CLIENT_EMAIL:
            return oauth_error("invalid_grant", "Invalid JWT: the key or issuer is not this account's.")
        if claims.get("aud") != AUDIENCE or SCOPE not in str(claims.get("scope", "")).split():
            return oauth_error("invalid_scope", "Invalid JWT: audience or scope.")
        if (
            not claims.get("iat", 0) - 300 <= now <= claims.get("exp", 0)
            or claims["exp"] - claims["iat"] > 3600
        ):
            return oauth_error(
                "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)."
            )
        token = f"ya29.fake-{next(self._tokens)}"
        self.issued.add(token)
        return json_reply(
            {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}
        )
