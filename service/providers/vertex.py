"""Google Vertex AI: Imagen (:predict) and Gemini image models (:generateContent), per project and location.

POST {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predict for
"imagen-*" ids, :generateContent for the others; the bodies and answers are the Gemini API's
(google.py builds and reads them), plus Vertex's own Imagen parameters. The base is
https://{location}-aiplatform.googleapis.com, or https://aiplatform.googleapis.com for the `global`
location (GOOGLE_VERTEX_BASE_URL moves it; `{location}` in it is replaced).

Settings use the google-genai SDK's names: GOOGLE_CLOUD_PROJECT (turns the provider on),
GOOGLE_CLOUD_LOCATION (default us-central1), and the credentials google-auth finds:
GOOGLE_APPLICATION_CREDENTIALS (a service account's JSON key, or gcloud's authorized-user file) when set, else
Application Default Credentials (gcloud's user credentials, the metadata server on Google Cloud).
google-auth is imported only when the provider is configured. Its tokens are refreshed in a thread
(the refresh is a blocking HTTP call), one refresh at a time, and reused until google-auth says they
are about to expire; every call carries `Authorization: Bearer <token>`.

Refusals: Imagen drops filtered images from `predictions` (with `raiFilteredReason`, which the adapter
asks for with includeRaiReason): none left is a ContentPolicyViolation, fewer a warning. Gemini's
promptFeedback.blockReason and safety finishReasons are refusals (google.py). Imagen's enhanced prompt
(`prompt` in a prediction) is the revised prompt.

Edits: imagen-3.0-capability-001 (Imagen's editing and customization model) edits one image through
:predict: instances[0] = {prompt, referenceImages: [{referenceType REFERENCE_TYPE_RAW, referenceId 1,
referenceImage {bytesBase64Encoded}}, and with a mask {referenceType REFERENCE_TYPE_MASK, referenceId
2, referenceImage, maskImageConfig {maskMode MASK_MODE_USER_PROVIDED, dilation}}]}, parameters
{editMode, sampleCount, editConfig {baseSteps}, ...}. Imagen's mask is edited where it is non-zero,
so the gateway's mask (transparent = change) goes as white where transparent, black elsewhere
(masks.py). With a mask the mode is EDIT_MODE_INPAINT_INSERTION unless providerOptions.vertex
.editMode names EDIT_MODE_INPAINT_REMOVAL or EDIT_MODE_OUTPAINT; without one EDIT_MODE_DEFAULT (a
mask-free edit). baseSteps goes under parameters.editConfig as the google-genai SDK sends it (the
REST reference page lists it as a top-level parameter). The output keeps the input image's size:
another asked size is ignored with a warning (the price is per image, whatever its size). Gemini
image models take every input image as an inlineData part (google.py).

providerOptions.vertex: the keys providerOptions.google takes, with `seed` for Imagen too (it needs
addWatermark false, which the adapter then sends), and for Imagen: addWatermark (boolean),
safetySetting (block_low_and_above, block_medium_and_above, block_only_high, block_none; sent upper
case as the SDK does), enhancePrompt (boolean; not for edits); for an Imagen edit with a mask:
editMode (EDIT_MODE_INPAINT_INSERTION, EDIT_MODE_INPAINT_REMOVAL, EDIT_MODE_OUTPAINT), baseSteps
(integer 1-100, sampling steps), maskDilation (number 0-1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pybase64

from service.config import ProviderConfig, Settings, SettingsError
from service.errors import ModelNotAllowed, UpstreamError
from service.providers import google
from service.providers.adapter import HttpAdapter
from service.providers.base import CallWarning, ImageCall, ImageCallResult, ignored_fields, unsupported
from service.providers.masks import WHITE, black_and_white
from service.providers.options import BOOLEAN, OptionsSchema, integer, number, string
from service.providers.spec import ProviderSpec
from service.providers.upstream import Upstream

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

log = logging.getLogger(__name__)

NAME = "vertex"
DEFAULT_LOCATION = "us-central1"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
REGIONAL_BASE = "https://{location}-aiplatform.googleapis.com"
GLOBAL_BASE = "https://aiplatform.googleapis.com"
CAPABILITY = "imagen-3.0-capability-001"  # Imagen's editing model
MASKED_EDIT_MODES = ("EDIT_MODE_INPAINT_INSERTION", "EDIT_MODE_INPAINT_REMOVAL", "EDIT_MODE_OUTPAINT")
EDIT_TYPES = ("image/png", "image/jpeg")


def _imagen_only(call: ImageCall) -> str | None:
    return None if call.upstream_model.startswith("imagen-") else f"{call.upstream_model} does not take it"


def _editing(call: ImageCall) -> str | None:
    if call.upstream_model != CAPABILITY:
        return f"{call.upstream_model} does not take it"
    return None if call.mask is not None else "it applies only to an edit with a mask"


def _not_editing(call: ImageCall) -> str | None:
    return "an edit does not take it" if call.upstream_model == CAPABILITY else None


OPTIONS = OptionsSchema(
    NAME,
    {
        **google.OPTIONS.options,
        "imageSize": google.OPTIONS.options["imageSize"].where(_not_editing),
        "seed": integer(0, 2**32 - 1),
        "addWatermark": BOOLEAN.where(_imagen_only),
        "safetySetting": string(
            "block_low_and_above", "block_medium_and_above", "block_only_high", "block_none", fold_case=True
        ).where(_imagen_only),
        "enhancePrompt": BOOLEAN.where(_imagen_only, _not_editing),
        "editMode": string(*MASKED_EDIT_MODES, fold_case=True).where(_editing),
        "baseSteps": integer(1, 100).where(_editing),
        "maskDilation": number(0, 1).where(_editing),
    },
)


def imagen_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """The Gemini API's :predict body, with Vertex's parameters."""
    options, warnings = OPTIONS.parse(call)
    body = google.imagen_request(call, options, warnings)
    parameters = body["parameters"]
    parameters["includeRaiReason"] = True  # a refusal then says which filter removed the images
    if "seed" in options:
        parameters["seed"] = options["seed"]
        parameters["addWatermark"] = False  # Imagen takes a seed only without its watermark
    for key in ("addWatermark", "enhancePrompt"):
        if key in options and key not in parameters:
            parameters[key] = options[key]
    if "safetySetting" in options:
        parameters["safetySetting"] = options["safetySetting"].upper()
    return body, warnings


def _reference(kind: str, reference_id: int, data: bytes, **config: Any) -> dict[str, Any]:
    image = {"bytesBase64Encoded": pybase64.b64encode(data).decode()}
    return {"referenceType": kind, "referenceId": reference_id, "referenceImage": image, **config}


async def edit_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """The :predict body of an Imagen edit (imagen-3.0-capability-001): the input image as the RAW
    reference and, with a mask, the mask as a user-provided MASK reference (white where to change:
    non-zero pixels are edited), editMode inpaint-insertion unless providerOptions.vertex.editMode
    says otherwise; without a mask EDIT_MODE_DEFAULT, a mask-free edit the prompt describes. The
    output keeps the input's size."""
    assert call.reference_image is not None
    options, warnings = OPTIONS.parse(call)
    warnings += ignored_fields(call, NAME, ("style", "background", "moderation", "output_compression"))
    if call.quality is not None:
        warnings.append(unsupported("quality", f"{CAPABILITY} has a single resolution"))
    picture = call.reference_image
    if (picture.width, picture.height) != (call.size.width, call.size.height):
        warnings.append(
            unsupported("size", f"{call.size} asked; an Imagen edit keeps the input image's size")
        )
    data, _ = await asyncio.to_thread(picture.in_formats, EDIT_TYPES)
    references = [_reference("REFERENCE_TYPE_RAW", 1, data)]
    parameters: dict[str, Any] = {"sampleCount": min(max(call.n, 1), 4), "includeRaiReason": True}
    if call.mask is not None:
        mask = await black_and_white(call.mask, WHITE, (picture.width, picture.height))
        mask_config: dict[str, Any] = {"maskMode": "MASK_MODE_USER_PROVIDED"}
        if "maskDilation" in options:
            mask_config["dilation"] = options["maskDilation"]
        references.append(_reference("REFERENCE_TYPE_MASK", 2, mask, maskImageConfig=mask_config))
        parameters["editMode"] = options.get("editMode", "EDIT_MODE_INPAINT_INSERTION")
        if "baseSteps" in options:
            parameters["editConfig"] = {"baseSteps": options["baseSteps"]}
    else:
        parameters["editMode"] = "EDIT_MODE_DEFAULT"
    if "personGeneration" in options:
        parameters["personGeneration"] = options["personGeneration"].upper()
    if "seed" in options:
        parameters.update(seed=options["seed"], addWatermark=False)  # a seed needs no watermark
    elif "addWatermark" in options:
        parameters["addWatermark"] = options["addWatermark"]
    if "safetySetting" in options:
        parameters["safetySetting"] = options["safetySetting"].upper()
    instance = {"prompt": call.prompt, "referenceImages": references}
    return {"instances": [instance], "parameters": parameters}, warnings


class AccessTokens:
    """OAuth2 access tokens from google-auth credentials: refreshed in a thread (google-auth's refresh
    is a blocking HTTP call), by one caller at a time, and reused while google-auth deems them valid
    (it counts a token as expired shortly before its real expiry)."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._lock = asyncio.Lock()

    async def header(self) -> dict[str, str]:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        async with self._lock:
            if not self._credentials.valid:
                try:
                    await asyncio.to_thread(self._credentials.refresh, Request())
                except GoogleAuthError as exc:  # refused, or the token endpoint could not be reached
                    log.warning("vertex: no access token (%r)", exc)
                    raise UpstreamError(
                        f"{NAME} could not get an access token for the gateway's credentials."
                    ) from None
        return {"Authorization": f"Bearer {self._credentials.token}"}


def load_credentials(config: ProviderConfig) -> Credentials:
    """The credentials file GOOGLE_APPLICATION_CREDENTIALS names (a service account's key, or gcloud's
    authorized-user file), else Application Default Credentials. A file is loaded by its declared
    type with that type's own loader, as google-auth advises (its generic loader would also run
    executable or remote credential sources a file may name)."""
    from google.auth import default as application_default  # only a worker that uses Vertex AI loads it
    from google.auth.exceptions import GoogleAuthError
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    path = config.settings.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not path:
        try:
            credentials: Credentials = application_default(scopes=SCOPES)[0]
        except GoogleAuthError as exc:
            raise SettingsError(
                f"vertex: no Application Default Credentials ({exc}); set GOOGLE_APPLICATION_CREDENTIALS"
            ) from None
        return credentials
    try:
        kind = json.loads(Path(str(path)).read_text()).get("type")
        if kind == "service_account":
            credentials = service_account.Credentials.from_service_account_file(str(path), scopes=SCOPES)  # type: ignore[no-untyped-call]
            return credentials
        if kind == "authorized_user":
            credentials = user_credentials.Credentials.from_authorized_user_file(str(path), scopes=SCOPES)  # type: ignore[no-untyped-call]
            return credentials
    except (OSError, ValueError, AttributeError) as exc:
        raise SettingsError(
            f"GOOGLE_APPLICATION_CREDENTIALS: cannot read {path} as credentials ({exc})"
        ) from None
    raise SettingsError(
        f"GOOGLE_APPLICATION_CREDENTIALS: {path} holds {kind!r} credentials; vertex takes service_account "
        "or authorized_user files (other kinds: leave it unset and use Application Default Credentials)"
    )


def base_url(configured: str, location: str) -> str:
    if location == "global" and configured == REGIONAL_BASE:
        return GLOBAL_BASE
    return configured.replace("{location}", location)


class VertexProvider(HttpAdapter):
    is_refusal = staticmethod(google.is_refusal)

    def __init__(self, upstream: Upstream, tokens: AccessTokens, project: str, location: str) -> None:
        super().__init__(upstream)
        self._tokens = tokens
        self._prefix = f"/v1/projects/{quote(project, safe='')}/locations/{quote(location, safe='')}"

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> VertexProvider:
        location = str(config.settings.get("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION)
        located = dataclasses.replace(config, base_url=base_url(config.base_url, location))
        upstream = Upstream.from_config(located, settings, {}, cls.is_refusal)
        return cls(upstream, AccessTokens(load_credentials(config)), config.api_key, location)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        model = call.upstream_model
        if model == CAPABILITY:
            if call.reference_image is None:
                raise ModelNotAllowed(f"{model} only edits images: send an image.", param="image")
            body, warnings = await edit_body(call)
            payload = await self._post(model, "predict", body, call.deadline)
            return google.read_imagen(self.name, payload, body["parameters"]["sampleCount"], warnings)
        if model.startswith("imagen-"):
            if call.reference_image is not None:  # the catalog keeps reference_image false for Imagen
                raise ModelNotAllowed(f"{model} cannot edit images.", param="reference_image")
            body, warnings = imagen_body(call)
            payload = await self._post(model, "predict", body, call.deadline)
            return google.read_imagen(self.name, payload, body["parameters"]["sampleCount"], warnings)
        body, warnings = await asyncio.to_thread(google.gemini_body, call, OPTIONS)  # base64 off the loop
        payload = await self._post(model, "generateContent", body, call.deadline)
        return google.read_gemini(self.name, payload, warnings)

    async def _post(self, model: str, method: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        path = f"{self._prefix}/publishers/google/models/{quote(model, safe='')}:{method}"
        headers = await self._tokens.header()
        payload, _ = await self._upstream.json_object("POST", path, deadline, json=body, headers=headers)
        return payload


PROVIDER = ProviderSpec(
    NAME,
    VertexProvider.create,
    OPTIONS,
    credentials=("GOOGLE_CLOUD_PROJECT",),
    base_url_env="GOOGLE_VERTEX_BASE_URL",
    default_base_url=REGIONAL_BASE,
    summary="Google Vertex AI (Imagen; Gemini image models)",
    settings=("GOOGLE_CLOUD_LOCATION", "GOOGLE_APPLICATION_CREDENTIALS"),
)
