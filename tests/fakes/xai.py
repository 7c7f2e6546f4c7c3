"""A fake of xAI's image API (https://docs.x.ai/docs/guides/image-generations): POST
/v1/images/generations and /edits with
Bearer auth, OpenAI-like JSON without size/quality/style, xAI's `{code, error}` error envelope, b64 or
fake-hosted URL answers, moderation placeholders inside a 200, and usage.cost_in_usd_ticks.

Bodies are checked closed: the REST body is translated to the official gRPC shape (xai.json
GenerateImageRequest: response_format -> format, "16:9" -> IMG_ASPECT_RATIO_16_9, "2k" ->
IMG_RESOLUTION_2K, image {url, type} -> {image_url}) and validated there; any other field is refused
as xAI refuses `size`. Extra triggers: BLOCKSOME (first image flagged, the rest delivered),
BLOCKPROMPT (400 moderation refusal of the prompt), BADITEM (an item with neither b64_json nor url).

Edits (/v1/images/edits): `image` (or up to 3 `images`) whose url is a data: URL of PNG, JPEG or WebP,
at most 10 MiB, whose bytes decode as the type the URL names; `received` keeps the decoded bytes.
The fake fetches nothing, so an http(s) URL fails the way an unreachable one fails at xAI.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import time
from typing import Any

from PIL import Image

from tests.fakes.base import (
    SLOW_S,
    FakeProvider,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    jpeg,
    json_reply,
)

MODELS = {  # upstream id -> cost in ticks per image (1e10 ticks = $1; the pro price is unconfirmed)
    "grok-imagine-image": 200_000_000,
    "grok-imagine-image-2026-03-02": 200_000_000,
    "grok-imagine-image-pro": 700_000_000,
    "grok-imagine-image-quality-20260403": 700_000_000,
}
RETIRED = {"grok-2-image", "grok-2-image-1212", "grok-2-image-latest"}
REST_FIELDS = {
    "model",
    "prompt",
    "n",
    "response_format",
    "aspect_ratio",
    "resolution",
    "user",
    "image",
    "images",
}
FORMATS = {"b64_json": "IMG_FORMAT_BASE64", "url": "IMG_FORMAT_URL"}
INVALID_ARGUMENT = "Client specified an invalid argument"
IMAGE_PATH = "/xai-imgen/xai-tmp-imgen-"
INPUT_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
MAX_INPUT_BYTES = 10 * 1024 * 1024


def error(code: str, message: str, status: int = 400, **headers: str) -> Reply:
    return json_reply({"code": code, "error": message}, status, **headers)


def to_proto(body: dict[str, Any]) -> dict[str, Any]:
    """The REST body in the shape of the gRPC GenerateImageRequest (names and enum spellings)."""
    proto: dict[str, Any] = {}
    for key, value in body.items():
        if key == "response_format":
            proto["format"] = FORMATS.get(value, value)
        elif key == "aspect_ratio" and isinstance(value, str):
            proto[key] = "IMG_ASPECT_RATIO_" + value.upper().replace(":", "_").replace(".", "_")
        elif key == "resolution" and isinstance(value, str):
            proto[key] = "IMG_RESOLUTION_" + value.upper()
        elif key == "image":
            proto[key] = _image_content(value)
        elif key == "images":
            proto[key] = [_image_content(v) for v in value] if isinstance(value, list) else value
        else:
            proto[key] = value
    return proto


def _image_content(value: Any) -> Any:
    if (
        not isinstance(value, dict)
        or set(value) - {"url", "type"}
        or value.get("type", "image_url") != "image_url"
    ):
        raise SchemaViolation(f"an image must be {{url, type: image_url}}, got {value!r}")
    return {"image_url": value.get("url")}


def input_image(url: Any) -> bytes | str:
    """The bytes of an edit's input image, or xAI's complaint about it (wording unconfirmed)."""
    if not isinstance(url, str) or not url:
        return "image.url is required"
    if not url.startswith("data:"):
        return f"Failed to fetch image from {url[:60]}: the fake fetches no URLs"
    header, _, payload = url.partition(",")
    media_type = header[5:].split(";")[0]
    if ";base64" not in header or media_type not in INPUT_TYPES:
        return f"Unsupported image data URL {header!r}: use base64 PNG, JPG or WebP"
    try:
        data = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            kind = image.format
    except (binascii.Error, ValueError, OSError):
        return "Unable to decode the input image"
    if kind != INPUT_TYPES[media_type]:
        return f"The input image is {kind}, not {media_type}"
    if len(data) > MAX_INPUT_BYTES:
        return "The input image is larger than 10 MiB"
    return data


class FakeXAI(FakeProvider):
    api_key = "xai-fake-key"
    PROVIDER = "xai"
    BASE_PATH = "/v1"
    SMOKE_MODEL = "xai/grok-imagine-image"

    def __init__(self) -> None:
        super().__init__()
        self.url_answers = False  # answer with URLs even when b64_json is asked (tests flip this)
        self.issued: set[str] = set()
        self.received: list[bytes] = []  # decoded edit input images, in arrival order
        self._ids = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        self.url_answers = False
        self.issued.clear()
        self.received.clear()

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith(IMAGE_PATH):
            if request.path not in self.issued:
                return Reply(404, b"Not Found", {"content-type": "text/plain"})
            return Reply(200, jpeg(), {"content-type": "image/jpeg"})
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return error("Unauthenticated", "Missing bearer authentication in header", 401)
        if auth != f"Bearer {self.api_key}":
            return error(INVALID_ARGUMENT, f"Incorrect API key provided: {auth[7:9]}***. You can obtain an "
                         "API key from https://console.x.ai.")  # fmt: skip
        edit = request.path == "/v1/images/edits"
        if request.method != "POST" or request.path not in ("/v1/images/generations", "/v1/images/edits"):
            return error("Some requested entity was not found", f"No handler for {request.path}", 404)
        body = request.json
        if not isinstance(body, dict):
            return error(INVALID_ARGUMENT, "Failed to deserialize the JSON body into the target type")
        if problem := self._check(body, edit):
            return problem
        inputs = [input_image(image.get("url")) for image in body.get("images", [body.get("image")]) if edit]
        if problems := [problem for problem in inputs if isinstance(problem, str)]:
            return error(INVALID_ARGUMENT, problems[0])
        self.received += [data for data in inputs if isinstance(data, bytes)]
        return self._trigger(body["prompt"]) or self._answer(body)

    def _check(self, body: dict[str, Any], edit: bool) -> Reply | None:
        if extra := sorted(set(body) - REST_FIELDS):
            return error(INVALID_ARGUMENT, f"Argument not supported: {extra[0]}")
        if not isinstance(body.get("model"), str) or not isinstance(body.get("prompt"), str):
            return error(INVALID_ARGUMENT, "model and prompt are required")
        if body["model"] in RETIRED or body["model"] not in MODELS:
            return error("Some requested entity was not found", f"The model {body['model']} does not exist "
                         "or your team does not have access to it.", 404)  # fmt: skip
        try:
            check_body("xai.json", "GenerateImageRequest", to_proto(body))
        except SchemaViolation as exc:
            return error(INVALID_ARGUMENT, f"Invalid request: {exc}")
        if edit != ("image" in body or "images" in body):
            return error(INVALID_ARGUMENT, "image or images is required for edits, and only for edits")
        if len(body.get("images", ())) > 3:
            return error(INVALID_ARGUMENT, "At most 3 input images are supported")
        if edit and body.get("aspect_ratio") == "auto":
            return error(INVALID_ARGUMENT, "aspect_ratio auto is only supported for generation")
        return None

    def _trigger(self, prompt: str) -> Reply | None:
        if "BLOCKPROMPT" in prompt:
            return error(INVALID_ARGUMENT, "Generated image rejected by content moderation.")
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error("Some resource has been exhausted", "Too many requests for this model: rate "
                         "limit of 5 requests per second reached.", 429, **{"retry-after": "1"})  # fmt: skip
        if "FAILME" in prompt:
            return error("Internal error", "The service encountered an internal error.", 500)
        if "FLAKY" in prompt and self.once(prompt):
            return error("The service is currently unavailable", "Service temporarily overloaded.", 503)
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>502 Bad Gateway</html>", {"content-type": "text/html"})
        if "EMPTY" in prompt:
            return json_reply({"data": [], "usage": {"cost_in_usd_ticks": 0}})
        if "BADITEM" in prompt:
            return json_reply({"data": [{"mime_type": "image/jpeg"}]})
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        return None

    def _answer(self, body: dict[str, Any]) -> Reply:
        prompt, n = body["prompt"], body.get("n", 1)
        blocked = n if "BLOCKME" in prompt else 1 if "BLOCKSOME" in prompt else 0
        as_url = self.url_answers or body.get("response_format", "url") == "url"
        items: list[dict[str, Any]] = [{"url": None, "b64_json": None, "respect_moderation": False}] * blocked
        for _ in range(n - blocked):
            item: dict[str, Any] = {
                "mime_type": "image/jpeg",
                "revised_prompt": f"A detailed photo of {prompt}",
            }
            if as_url:
                path = f"{IMAGE_PATH}{next(self._ids)}.jpeg"
                self.issued.add(path)
                item["url"] = f"{self.url}{path}"
            else:
                item["b64_json"] = base64.b64encode(jpeg()).decode()
            items.append(item)
        ticks = MODELS[body["model"]] * (n - blocked)
        return json_reply(
            {"data": items, "usage": {"cost_in_usd_ticks": ticks}},
            **{"x-request-id": f"req-xai-{len(self.requests)}"},
        )
