"""A fake of the Gemini API image endpoints, from https://ai.google.dev/gemini-api/docs/image-generation
and google.json (the
googleapis protos + python-genai): x-goog-api-key (or ?key=) auth, :generateContent with inlineData
image parts, usageMetadata and refusals inside a 200, Imagen :predict with silently filtered
predictions, and the google.rpc.Status error envelope.

Triggers beyond the shared ones: BLOCKIMAGE (a candidate with finishReason IMAGE_SAFETY and no image),
FILTERONE (Imagen drops one of the asked images). BLOCKME blocks the prompt (promptFeedback.blockReason)
on Gemini and filters every image (`{}`) on Imagen; EMPTY is a text-only answer on Gemini.

Reference images (edits) are `inlineData` parts of the user turn: the mime type must be a supported
image type, the data must be base64 that decodes as an image of that type (else 400 "Unable to process
input image"), and each one adds IMAGE_TOKENS to promptTokensDetails. `received` keeps the decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import re
import time
from typing import Any

from PIL import Image

from tests.fakes.base import SLOW_S, FakeProvider, Recorded, Reply, check_body, json_reply, png

GEMINI_MODELS = {"gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"}
IMAGEN_MODELS = {"imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-4.0-ultra-generate-001"}
IMAGEN_2K = {"imagen-4.0-generate-001", "imagen-4.0-ultra-generate-001"}
GEMINI_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
IMAGEN_RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9"}
IMAGE_SIZES = {"gemini-3-pro-image-preview": {"1K", "2K", "4K"},
               "gemini-3.1-flash-image-preview": {"512", "1K", "2K", "4K"}}  # fmt: skip
PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|predict)$")
UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
KEY_INVALID = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
    "metadata": {"service": "generativelanguage.googleapis.com"},
}
RAI_REASON = (
    "Your current safety filter threshold filtered out 1 generated images. You will be able to see "
    "fewer images. If you think this was an error, send feedback. Support codes: 39322892"
)
BLOCKED_IMAGE = "Unable to show the generated image: it may violate our policies."
IMAGE_MIME = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/heic": "HEIF",
              "image/heif": "HEIF"}  # fmt: skip
IMAGE_TOKENS = 258  # an input image of at most 384 px on both sides
BAD_IMAGE = (
    "Unable to process input image. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting"
)
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip


def error(message: str, status: int = 400, details: list[dict[str, Any]] | None = None) -> Reply:
    status_body: dict[str, Any] = {"code": status, "message": message, "status": STATUS[status]}
    if details:
        status_body["details"] = details
    body = {"error": status_body}
    check_body("google.json", "ErrorResponse", body)
    return json_reply(body, status)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeGoogle(FakeProvider):
    PROVIDER = "google"
    BASE_PATH = "/v1beta"
    SMOKE_MODEL = "google/gemini-2.5-flash-image"
    api_key = "g-fake-gemini"
    final_color = (30, 160, 60)  # the answer's image; Gemini 3 interim "thought" images are grey
    PREDICT_SCHEMA = ("google.json", "PredictRequest")  # (schema file, definition) of :predict bodies

    def __init__(self) -> None:
        super().__init__()
        self._response_ids = itertools.count(1)
        self.received: list[bytes] = []  # decoded inlineData images, in arrival order

    def reset(self) -> None:
        super().reset()
        self.received.clear()

    def _input_image(self, blob: dict[str, Any]) -> bytes | None:
        """The decoded bytes of an inlineData image part, or None if Gemini would refuse it."""
        check_body("google.json", "Blob", blob)
        fmt = IMAGE_MIME.get(blob.get("mimeType", ""))
        try:
            data = base64.b64decode(blob.get("data", ""), validate=True)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return data if image.format == fmt else None
        except (binascii.Error, ValueError, OSError):
            return None

    def handle(self, request: Recorded) -> Reply:
        key = request.headers.get("x-goog-api-key") or next(iter(request.query.get("key", [])), None)
        if key is None:
            return error(UNREGISTERED, 403)
        if key != self.api_key:
            return error("API key not valid. Please pass a valid API key.", 400, [KEY_INVALID])
        match = PATH.match(request.path)
        if request.method != "POST" or match is None:
            return error(f"The requested URL {request.path} was not found on this server.", 404)
        model, method = match.groups()
        if model not in (GEMINI_MODELS if method == "generateContent" else IMAGEN_MODELS):
            return error(f"models/{model} is not found for API version v1beta, or is not supported for "
                         f"{method}. Call ListModels to see the list of available models and their "
                         "supported methods.", 404)  # fmt: skip
        if not isinstance(request.json, dict):
            return error("Invalid JSON payload received.")
        if method == "predict":
            return self._predict(model, request.json)
        return self._generate_content(model, request.json)

    # :generateContent --------------------------------------------------------------------------
    def _generate_content(self, model: str, body: dict[str, Any]) -> Reply:
        check_body("google.json", "GenerateContentRequest", body)
        texts, images = [], []
        for content in body["contents"]:
            check_body("google.json", "Content", content)
            for part in content.get("parts", []):
                check_body("google.json", "Part", part)
                texts += [part["text"]] if "text" in part else []
                if "inlineData" in part:
                    mime = part["inlineData"].get("mimeType", "")
                    if mime not in IMAGE_MIME:
                        return error(f"Unsupported MIME type: {mime}")
                    if (data := self._input_image(part["inlineData"])) is None:
                        return error(BAD_IMAGE)
                    images.append(data)
                if "fileData" in part:
                    return error("The fake serves no Files API: use inlineData.")
        config = body.get("generationConfig", {})
        check_body("google.json", "GenerationConfig", config)
        image_config = config.get("imageConfig", {})
        check_body("google.json", "ImageConfig", image_config)
        if image_config.get("aspectRatio", "1:1") not in GEMINI_RATIOS:
            return error(f"Invalid aspect ratio: {image_config['aspectRatio']}.")
        if "imageSize" in image_config and image_config["imageSize"] not in IMAGE_SIZES.get(model, set()):
            return error(f"imageSize {image_config['imageSize']!r} is not supported for models/{model}.")
        if config.get("candidateCount", 1) != 1:
            return error("Multiple candidates is not enabled for this model.")
        prompt = " ".join(texts)
        if reply := self._trigger(prompt):
            return reply
        self.received += images
        text_tokens = len(prompt.split()) + 3
        image_tokens = IMAGE_TOKENS * len(images)
        details: list[dict[str, Any]] = [{"modality": "TEXT", "tokenCount": text_tokens}]
        if images:
            details.append({"modality": "IMAGE", "tokenCount": image_tokens})
        tokens = text_tokens + image_tokens
        usage: dict[str, Any] = {"promptTokenCount": tokens, "promptTokensDetails": details}
        common = {"modelVersion": model, "responseId": f"resp-{next(self._response_ids)}"}
        if "BLOCKME" in prompt:
            feedback = {"blockReason": "PROHIBITED_CONTENT"}
            return json_reply({"promptFeedback": feedback, "usageMetadata": usage, **common})
        if "BLOCKIMAGE" in prompt:
            candidate = {"finishReason": "IMAGE_SAFETY", "index": 0, "finishMessage": BLOCKED_IMAGE}
            return json_reply({"candidates": [candidate], "usageMetadata": usage, **common})
        modalities = config.get("responseModalities", ["TEXT"])
        parts: list[dict[str, Any]] = []
        if "EMPTY" in prompt or "IMAGE" not in modalities:
            parts.append({"text": "I can draw that. Would you like it in colour or in black and white?"})
        else:
            if model.startswith("gemini-3"):
                parts.append({"text": "**Composing** the scene", "thought": True})
                parts.append({"inlineData": {"mimeType": "image/png", "data": b64(png(color=(90, 90, 90)))},
                              "thought": True})  # fmt: skip
            if "TEXT" in modalities:
                parts.append({"text": "Here is your image."})
            image: dict[str, Any] = {
                "inlineData": {"mimeType": "image/png", "data": b64(png(color=self.final_color))}
            }
            if model.startswith("gemini-3"):
                image["thoughtSignature"] = b64(b"signature")
            parts.append(image)
        out_tokens = (
            2000 if image_config.get("imageSize") == "4K" else 1120 if model.startswith("gemini-3") else 1290
        )
        usage["candidatesTokenCount"] = out_tokens
        usage["totalTokenCount"] = tokens + out_tokens
        usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": out_tokens}]
        candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        answer = {"candidates": [candidate], "usageMetadata": usage, **common}
        check_body("google.json", "GenerateContentResponse", answer)
        return json_reply(answer)

    # :predict (Imagen) -------------------------------------------------------------------------
    def _predict(self, model: str, body: dict[str, Any]) -> Reply:
        check_body(*self.PREDICT_SCHEMA, body)
        parameters = body.get("parameters", {})
        if problem := self._check_imagen_parameters(parameters):
            return problem
        if len(body["instances"]) != 1:
            return error("Only one instance is supported.")
        check_body("google.json", "ImagenInstance", body["instances"][0])
        prompt = body["instances"][0].get("prompt", "")
        count = parameters.get("sampleCount", 4)
        if not 1 <= count <= 4:
            return error(f"Number of images must be in the range [1, 4], got {count}.")
        if parameters.get("aspectRatio", "1:1") not in IMAGEN_RATIOS:
            return error(f"Aspect ratio {parameters['aspectRatio']} is not supported.")
        if "sampleImageSize" in parameters and (
            model not in IMAGEN_2K or parameters["sampleImageSize"] not in ("1K", "2K")
        ):
            return error(f"sampleImageSize is not supported for models/{model}.")
        if reply := self._trigger(prompt):
            return reply
        # Filtered images are left out; with includeRaiReason each leaves its reason instead.
        filtered = count if "BLOCKME" in prompt or "EMPTY" in prompt else 1 if "FILTERONE" in prompt else 0
        image: dict[str, Any] = {
            "bytesBase64Encoded": b64(png(color=self.final_color)),
            "mimeType": "image/png",
        }
        if parameters.get("enhancePrompt"):
            image["prompt"] = f"A detailed, well-lit rendering of {prompt}"
        predictions = [image] * (count - filtered)
        if parameters.get("includeRaiReason"):
            predictions += [{"raiFilteredReason": RAI_REASON}] * filtered
        return json_reply({"predictions": predictions} if predictions else {})

    def _check_imagen_parameters(self, parameters: dict[str, Any]) -> Reply | None:
        check_body("google.json", "ImagenParameters", parameters)
        return None

    # shared triggers ---------------------------------------------------------------------------
    def _trigger(self, prompt: str) -> Reply | None:
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error("Resource has been exhausted (e.g. check quota).", 429, [{
                "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}])  # fmt: skip
        if "FAILME" in prompt:
            return error("An internal error has occurred. Please retry or report in "
                         "https://developers.generativeai.google/guide/troubleshooting", 500)  # fmt: skip
        if "FLAKY" in prompt and self.once(prompt):
            return error("The model is overloaded. Please try again later.", 503)
        if "GARBAGE" in prompt:
            return Reply(200, b"<html><body>502 Bad Gateway</body></html>", {"content-type": "text/html"})
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        return None
