"""Google Gemini API: Gemini image models (:generateContent) and Imagen (:predict) (providers/google.md).

POST {base}/models/{model}:generateContent or :predict, `x-goog-api-key` auth, always synchronous base64.
The wire shape follows the upstream id: "imagen-*" ids use :predict, every other id :generateContent.

Gemini image models return one image per call (catalog max_images_per_call: 1). The size becomes
imageConfig.aspectRatio; Gemini 3 models also get imageConfig.imageSize (1K/2K/4K) from the longer side,
and quality hd/high asks for at least 2K. Refusals arrive inside a 200: promptFeedback.blockReason or a
candidate whose finishReason is a safety reason; both raise ContentPolicyViolation. Usage comes from
usageMetadata (promptTokenCount -> input tokens); responseId is the upstream request id.
providerOptions.google: responseModalities (default ["IMAGE"]), imageConfig (merged over the computed
one), imageSize, safetySettings, seed, temperature, googleSearch (true -> tools [{"googleSearch": {}}]).
A reference image (edit / image-to-image) is one more part of the user turn, after the text: inlineData
{mimeType, data: base64}; an edit's several input images are one part each, in order (a GIF, which
Gemini does not take, becomes a PNG of its first frame). No edit options (strength, mask): the
prompt says what to change. Their tokens are usage.input_image_tokens.

Imagen takes parameters.sampleCount (1-4), aspectRatio (five ratios) and, on Imagen 4 standard/ultra,
sampleImageSize 2K for large sizes or quality hd/high; it cannot edit on the Gemini API (a reference
image is refused before any call). Safety filtering drops images silently: no predictions at all is a
ContentPolicyViolation, fewer than asked is a warning.
providerOptions.google: personGeneration (dont_allow/allow_adult/allow_all, sent upper case), imageSize.
"""

from __future__ import annotations

import asyncio
import base64
from fractions import Fraction
from typing import Any

from service.catalog.sizes import Size
from service.config import ProviderConfig
from service.errors import ContentPolicyViolation, ModelNotAllowed, UpstreamError
from service.generation.reference_images import ReferenceImage
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    ProviderUsage,
    adjusted,
    other,
    unsupported,
)
from service.providers.options import ARRAY, BOOLEAN, OBJECT, OptionsSchema, integer, number, string
from service.providers.spec import ProviderSpec
from service.providers.upstream import decode_image, malformed

NAME = "google"
# The ratios the googleapis proto documents for ImageConfig.aspectRatio (its list has no 4:5 / 5:4).
GEMINI_RATIOS = ["1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"]
IMAGEN_RATIOS = ["1:1", "3:4", "4:3", "9:16", "16:9"]
HIGH_QUALITIES = frozenset({"hd", "high"})
# finishReasons that mean "blocked by policy" (others, e.g. NO_IMAGE / OTHER / MAX_TOKENS, are failures).
REFUSAL_FINISH = frozenset({"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
                            "BLOCKLIST", "SPII", "RECITATION", "IMAGE_RECITATION"})  # fmt: skip


def is_refusal(status: int, body: Any, text: str) -> bool:
    """Google reports content blocks inside 200 answers, never as an HTTP error."""
    return False


def is_credential_error(status: int, body: Any, text: str) -> bool:
    """Google answers a bad API key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return isinstance(details, list) and any(
        isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details
    )


def _is_imagen(model: str) -> bool:
    return model.startswith("imagen-")


def _gemini_only(call: ImageCall) -> str | None:
    return f"{call.upstream_model} (Imagen) does not take it" if _is_imagen(call.upstream_model) else None


def _imagen_only(call: ImageCall) -> str | None:
    return None if _is_imagen(call.upstream_model) else f"{call.upstream_model} (Gemini) does not take it"


OPTIONS = OptionsSchema(
    NAME,
    {
        "responseModalities": ARRAY.where(_gemini_only),
        "imageConfig": OBJECT.where(_gemini_only),  # merged over the computed imageConfig
        "imageSize": string(),
        "safetySettings": ARRAY.where(_gemini_only),
        "seed": integer().where(_gemini_only),
        "temperature": number().where(_gemini_only),
        "googleSearch": BOOLEAN.where(_gemini_only),
        "personGeneration": string("dont_allow", "allow_adult", "allow_all", fold_case=True).where(
            _imagen_only
        ),
    },
)


def _tier(size: Size, quality: str | None) -> str:
    """1K/2K/4K: the smallest tier whose native longer side (1K <= ~1584, 2K <= ~3168) covers the size."""
    longer = max(size.width, size.height)
    tier = "1K" if longer <= 1600 else "2K" if longer <= 3200 else "4K"
    return "2K" if tier == "1K" and quality in HIGH_QUALITIES else tier


def _aspect_ratio(size: Size, ratios: list[str], warnings: list[CallWarning]) -> str:
    label = size.nearest_ratio(ratios)
    width, height = label.split(":")
    if Fraction(int(width), int(height)) != size.aspect_ratio:
        warnings.append(adjusted("size", f"{size} is not exactly a supported aspect ratio; sent {label}"))
    return label


def _common_warnings(call: ImageCall) -> list[CallWarning]:
    warnings = [unsupported(name, "google does not support it") for name, value in (
        ("style", call.style), ("background", call.background), ("moderation", call.moderation),
        ("output_compression", call.output_compression)) if value is not None]  # fmt: skip
    if call.output_format not in (None, "png"):
        warnings.append(unsupported("output_format", f"{call.output_format} asked; google returns PNG"))
    return warnings


def inline_part(reference: ReferenceImage) -> dict[str, Any]:
    """The reference's inlineData part; a GIF becomes PNG (Gemini takes PNG, JPEG, WebP, HEIC, HEIF)."""
    data, media_type = reference.in_formats(("image/png", "image/jpeg", "image/webp"))
    return {"inlineData": {"mimeType": media_type, "data": base64.b64encode(data).decode()}}


def gemini_body(call: ImageCall, schema: OptionsSchema = OPTIONS) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for POST models/{model}:generateContent (the same body on Vertex AI,
    whose options schema declares these keys under its own name)."""
    options, warnings = schema.parse(call)
    warnings += _common_warnings(call)
    if call.n > 1:  # the catalog's max_images_per_call is 1, so generation.py never asks for more
        warnings.append(unsupported("n", f"{call.n} asked; {call.upstream_model} returns one image per call"))
    image_config: dict[str, Any] = {"aspectRatio": _aspect_ratio(call.size, GEMINI_RATIOS, warnings)}
    if call.upstream_model.startswith("gemini-3"):
        image_config["imageSize"] = _tier(call.size, call.quality)
    elif call.quality is not None:
        warnings.append(unsupported("quality", f"{call.upstream_model} has a single resolution"))
    if "imageSize" in options:
        image_config["imageSize"] = options["imageSize"]
    image_config.update(options.get("imageConfig", {}))
    config: dict[str, Any] = {"responseModalities": options.get("responseModalities", ["IMAGE"])}
    config.update({k: options[k] for k in ("seed", "temperature") if k in options})
    config["imageConfig"] = image_config
    parts = [{"text": call.prompt}, *(inline_part(picture) for picture in call.input_images)]
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": config,
    }
    if "safetySettings" in options:
        body["safetySettings"] = options["safetySettings"]
    if options.get("googleSearch"):
        body["tools"] = [{"googleSearch": {}}]
    return body, warnings


def imagen_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for POST models/{model}:predict."""
    options, warnings = OPTIONS.parse(call)
    return imagen_request(call, options, warnings), warnings


def imagen_request(call: ImageCall, options: dict[str, Any], warnings: list[CallWarning]) -> dict[str, Any]:
    """The :predict body from parsed options (Vertex AI adds its own parameters to it)."""
    warnings += _common_warnings(call)
    parameters: dict[str, Any] = {
        "sampleCount": min(max(call.n, 1), 4),
        "aspectRatio": _aspect_ratio(call.size, IMAGEN_RATIOS, warnings),
    }
    if call.upstream_model.startswith(("imagen-4.0-generate", "imagen-4.0-ultra")):
        if _tier(call.size, call.quality) != "1K":
            parameters["sampleImageSize"] = "2K"
    elif call.quality is not None:
        warnings.append(unsupported("quality", f"{call.upstream_model} has a single resolution"))
    if "imageSize" in options:
        parameters["sampleImageSize"] = options["imageSize"]
    if "personGeneration" in options:
        parameters["personGeneration"] = options["personGeneration"].upper()
    return {"instances": [{"prompt": call.prompt}], "parameters": parameters}


def parse_usage(payload: dict[str, Any]) -> ProviderUsage | None:
    usage = payload.get("usageMetadata")
    if not isinstance(usage, dict):
        return None
    details = usage.get("promptTokensDetails")
    image_tokens: list[object] = [
        d.get("tokenCount")
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and d.get("modality") == "IMAGE"
    ]
    counts = [tokens for tokens in image_tokens if type(tokens) is int]
    return ProviderUsage.reported(
        input_tokens=usage.get("promptTokenCount"),
        output_tokens=usage.get("candidatesTokenCount"),
        # every image entry must be a count: a partial sum would under-count
        input_image_tokens=sum(counts) if counts and len(counts) == len(image_tokens) else None,
    )


class GoogleProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)
    is_credential_error = staticmethod(is_credential_error)

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        return {"x-goog-api-key": config.api_key}

    async def generate(self, call: ImageCall) -> ImageCallResult:
        if _is_imagen(call.upstream_model):
            if call.reference_image is not None:  # the catalog keeps reference_image false for Imagen
                raise ModelNotAllowed(f"{call.upstream_model} cannot edit images.", param="reference_image")
            return await self._imagen(call)
        return await self._gemini(call)

    async def _post(self, model: str, method: str, body: dict[str, Any], deadline: float) -> Any:
        payload = await self._upstream.json("POST", f"/models/{model}:{method}", deadline, json=body)
        if not isinstance(payload, dict):
            raise malformed(self.name, f"not a JSON object: {str(payload)[:200]!r}")
        return payload

    async def _gemini(self, call: ImageCall) -> ImageCallResult:
        body, warnings = await asyncio.to_thread(gemini_body, call)  # base64 of a reference off the loop
        payload = await self._post(call.upstream_model, "generateContent", body, call.deadline)
        return read_gemini(self.name, payload, warnings)

    async def _imagen(self, call: ImageCall) -> ImageCallResult:
        body, warnings = imagen_body(call)
        payload = await self._post(call.upstream_model, "predict", body, call.deadline)
        return read_imagen(self.name, payload, body["parameters"]["sampleCount"], warnings)


def read_gemini(provider: str, payload: dict[str, Any], warnings: list[CallWarning]) -> ImageCallResult:
    """A :generateContent answer (Gemini API or Vertex AI): its images, or the refusal it carries."""
    feedback = payload.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        detail = feedback.get("blockReasonMessage") or "the prompt was blocked"
        raise ContentPolicyViolation(f"{provider}: {detail} ({feedback['blockReason']})")
    candidates = payload.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise malformed(provider, "no candidates in the answer")
    images, texts, reasons = [], [], []
    for candidate in candidates:
        if not isinstance(candidate, dict):
            raise malformed(provider, "a candidate that is not an object")
        reasons.append((str(candidate.get("finishReason", "")), candidate.get("finishMessage")))
        content = candidate.get("content") or {}
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict) or part.get("thought"):
                continue  # thinking output (Gemini 3 interim images) is not the answer
            blob = part.get("inlineData")
            if isinstance(blob, dict) and str(blob.get("mimeType", "image/")).startswith("image/"):
                images.append(GeneratedImage(*decode_image(provider, blob.get("data"))))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    if not images:
        reason, message = reasons[0]
        if reason in REFUSAL_FINISH:
            raise ContentPolicyViolation(f"{provider}: {message or 'the image was blocked'} ({reason})")
        said = f": {' '.join(texts)[:300]!r}" if texts else ""
        raise UpstreamError(f"{provider} returned no image (finishReason {reason or 'none'}){said}")
    request_id = payload.get("responseId")
    return ImageCallResult(
        images=images,
        usage=parse_usage(payload),
        upstream_request_id=request_id if isinstance(request_id, str) else None,
        warnings=warnings,
    )


def read_imagen(
    provider: str, payload: dict[str, Any], asked: int, warnings: list[CallWarning]
) -> ImageCallResult:
    """A :predict answer: the images left after the safety filters (none left is a refusal). Vertex
    AI adds the enhanced prompt to each prediction (`prompt`), kept as the revised prompt."""
    predictions = payload.get("predictions", [])
    if not isinstance(predictions, list):
        raise malformed(provider, "predictions is not a list")
    images, filtered = [], []
    for item in predictions:
        if not isinstance(item, dict):
            raise malformed(provider, "a prediction that is not an object")
        if "bytesBase64Encoded" in item:
            revised = item.get("prompt") if isinstance(item.get("prompt"), str) else None
            images.append(
                GeneratedImage(*decode_image(provider, item["bytesBase64Encoded"]), revised or None)
            )
        else:
            filtered.append(str(item.get("raiFilteredReason") or "filtered"))
    if not images:
        reasons = f": {'; '.join(filtered)}" if filtered else ""
        raise ContentPolicyViolation(f"{provider}: Imagen's safety filters removed every image{reasons}")
    if len(images) < asked:
        removed = asked - len(images)
        warnings.append(other("n", f"{removed} of {asked} images were removed by Imagen's safety filters"))
    return ImageCallResult(images=images, usage=None, warnings=warnings)


PROVIDER = ProviderSpec(
    NAME,
    GoogleProvider.create,
    OPTIONS,
    credentials=("GEMINI_API_KEY",),
    base_url_env="GEMINI_BASE_URL",
    default_base_url="https://generativelanguage.googleapis.com/v1beta",
    summary="Gemini API (Gemini image models; Imagen)",
)
