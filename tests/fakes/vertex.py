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
- imagen-3.0-capability-001 :predict is Imagen's edit (VertexEditRequest): exactly one RAW reference
  image, at most one MASK (a user-provided one the RAW image's size), a mask for the masked edit
  modes, no generation-only parameters; the answer's images are the RAW image's size. `edits` keeps
  (raw, mask, parameters) of each accepted edit.
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
from PIL.Image import Image as PILImage

from tests.fakes.base import FakeProvider, Recorded, Reply, check_body, decoded_picture, json_reply, png
from tests.fakes.google import GEMINI_MODELS, IMAGEN_MODELS, RAI_REASON, FakeGoogle, b64, error

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


CAPABILITY = "imagen-3.0-capability-001"
MASKED_MODES = {"EDIT_MODE_INPAINT_INSERTION", "EDIT_MODE_INPAINT_REMOVAL", "EDIT_MODE_OUTPAINT"}


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
        self.edits: list[tuple[PILImage, PILImage | None, dict[str, Any]]] = []  # (raw, mask, parameters)
        self._tokens = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        self.issued.clear()
        self.token_requests = 0
        self.edits.clear()

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
        if model not in (GEMINI_MODELS if method == "generateContent" else {*IMAGEN_MODELS, CAPABILITY}):
            return error(f"Publisher Model `projects/{project}/locations/{location}/publishers/google/models/"
                         f"{model}` not found.", 404)  # fmt: skip
        if not isinstance(request.json, dict):
            return error("Invalid JSON payload received.")
        if method == "predict" and model == CAPABILITY:
            return self._edit(request.json)
        if method == "predict":
            return self._predict(model, request.json)
        return self._generate_content(model, request.json)

    def _edit(self, body: dict[str, Any]) -> Reply:
        """An Imagen edit: one RAW reference image, at most one MASK (the RAW image's size when the
        user provides it), and the mask a masked editMode needs."""
        check_body("vertex.json", "VertexEditRequest", body)
        (instance,) = body["instances"]
        parameters = body["parameters"]
        if "seed" in parameters and parameters.get("addWatermark", True):
            return error("Seed is not supported when watermark is enabled. Set addWatermark to false.")
        references = instance["referenceImages"]
        raws = [r for r in references if r["referenceType"] == "REFERENCE_TYPE_RAW"]
        masks = [r for r in references if r["referenceType"] == "REFERENCE_TYPE_MASK"]
        if len(raws) != 1 or len(masks) > 1:
            return error("Exactly one raw reference image and at most one mask reference image are allowed.")
        if len({r["referenceId"] for r in references}) != len(references):
            return error("Reference ids must be unique within a request.")
        raw = decoded_picture(raws[0].get("referenceImage", {}).get("bytesBase64Encoded"))
        if raw is None:
            return error("The raw reference image must be a PNG or JPEG image.")
        mask = None
        if masks:
            config = masks[0].get("maskImageConfig", {})
            if config.get("maskMode") == "MASK_MODE_USER_PROVIDED":
                mask = decoded_picture(masks[0].get("referenceImage", {}).get("bytesBase64Encoded"))
                if mask is None or mask.size != raw.size:
                    return error("The mask image must be an image the size of the raw reference image.")
        if parameters["editMode"] in MASKED_MODES and not masks:
            return error(f"{parameters['editMode']} requires a mask reference image.")
        count = parameters.get("sampleCount", 4)
        prompt = instance.get("prompt", "")
        if reply := self._trigger(prompt):
            return reply
        self.edits.append((raw, mask, parameters))
        filtered = count if "BLOCKME" in prompt else 0
        image = {"bytesBase64Encoded": b64(png(*raw.size, color=self.final_color)), "mimeType": "image/png"}
        predictions: list[dict[str, Any]] = [image] * (count - filtered)
        if parameters.get("includeRaiReason"):
            predictions += [{"raiFilteredReason": RAI_REASON}] * filtered
        return json_reply({"predictions": predictions} if predictions else {})

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
