"""A fake of Stability AI's v2beta Stable Image generate endpoints
(https://platform.stability.ai/docs/api-reference and
tests/fakes/schemas/stability.json): Bearer auth, multipart/form-data only, the form checked against the
endpoint's multipart schema (closed), `Accept` deciding between raw image bytes (with `finish-reason` /
`seed` headers) and the JSON body, and the `{id, name, errors}` error envelope.

Image-to-image (ultra, sd3): `image` must be a file part that decodes as JPEG, PNG or WebP, 64 to
16,384 px a side (ultra: at least 4,096 pixels); `received` keeps the bytes that arrived. The answer
then has the input's dimensions (the output follows the input's shape).

Inpainting (/v2beta/stable-image/edit/inpaint): `image` (JPEG, PNG or WebP, 64 px a side at least,
4,096 to 9,437,184 pixels) and an optional `mask` that must decode as an image; without one the
image's alpha channel is the mask, and an image without transparent pixels is a 400 (nothing to
inpaint). `masks` keeps the mask parts that arrived. The answer has the input's size.

Triggers: the shared ones (BLOCKME is the 403 `content_moderation` answer), plus FILTERME: a 200 whose
finish_reason is CONTENT_FILTERED (the call "succeeded" but the image is blurred)."""

from __future__ import annotations

import base64
import io
import time
import uuid
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
    png,
)

ENDPOINTS = {
    "/v2beta/stable-image/generate/ultra": "GenerateUltraRequest",
    "/v2beta/stable-image/generate/core": "GenerateCoreRequest",
    "/v2beta/stable-image/generate/sd3": "GenerateSD3Request",
    "/v2beta/stable-image/edit/inpaint": "InpaintRequest",
}
NUMBER_FIELDS = ("seed", "strength", "cfg_scale", "grow_mask")
FILE_FIELDS = ("image", "mask")
INPAINT_PIXELS = (4096, 9_437_184)
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
MODERATION_MESSAGE = (
    "Your request was flagged by our content moderation system, as a result your request was denied and "
    "you were not charged."
)
DEFAULT_SEED = 3471229011
INPUT_FORMATS = {"JPEG", "PNG", "WEBP"}


def webp(width: int = 8, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 200, 30)).save(out, format="WEBP")
    return out.getvalue()


IMAGES = {"png": png, "jpeg": jpeg, "webp": webp}


def error(status: int, name: str, *messages: str, **headers: str) -> Reply:
    return json_reply({"id": uuid.uuid4().hex, "name": name, "errors": list(messages)}, status, **headers)


def input_image(data: bytes, definition: str) -> tuple[int, int] | str:
    """(width, height) of an acceptable `image` part, or the provider's complaint about it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            kind, (width, height) = image.format, image.size
    except (OSError, ValueError):
        return "image: could not be decoded as an image"
    if kind not in INPUT_FORMATS:
        return f"image: unsupported format {kind}; use jpeg, png or webp"
    if min(width, height) < 64 or max(width, height) > 16384:
        return f"image: width and height must be between 64 and 16384 px, got {width}x{height}"
    if definition == "GenerateUltraRequest" and width * height < 4096:
        return "image: must have at least 4096 pixels"
    if definition == "InpaintRequest" and not INPAINT_PIXELS[0] <= width * height <= INPAINT_PIXELS[1]:
        return f"image: total pixel count must be between 4,096 and 9,437,184, got {width * height}"
    return width, height


def inpaint_mask(form: dict[str, Any]) -> str | None:
    """The complaint about an inpainting's mask (or the image's alpha, without one), if any."""
    if "mask" in form:
        try:
            with Image.open(io.BytesIO(form["mask"])) as mask:
                mask.load()
        except (OSError, ValueError):
            return "mask: could not be decoded as an image"
        return None
    with Image.open(io.BytesIO(form["image"])) as image:
        transparent = image.convert("RGBA").getchannel("A").point(lambda value: 255 if value < 255 else 0)
    if transparent.getbbox() is None:
        return "mask: required unless image has an alpha channel marking what to inpaint"
    return None


class FakeStability(FakeProvider):
    PROVIDER = "stability"
    BASE_PATH = ""
    SMOKE_MODEL = "stability/stable-image-core"
    api_key = "sk-fake-stability"

    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []  # `image` parts that passed the checks, in arrival order
        self.masks: list[bytes] = []  # inpainting `mask` parts that passed, in arrival order

    def reset(self) -> None:
        super().reset()
        self.received.clear()
        self.masks.clear()

    def handle(self, request: Recorded) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "unauthorized", "authorization: invalid or missing API key")
        definition = ENDPOINTS.get(request.path)
        if request.method != "POST" or definition is None:
            return error(404, "not_found", f"{request.method} {request.path}: not found")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error(400, "bad_request", "content-type: must be multipart/form-data")
        try:
            form = self._typed(request.form)
            check_body("stability.json", definition, form)
        except SchemaViolation as exc:
            return error(400, "bad_request", str(exc))
        if problem := self._check_rules(definition, form):
            return error(400, "bad_request", problem)
        size: tuple[int, int] | None = None
        if "image" in form:
            checked = input_image(request.form["image"], definition)
            if isinstance(checked, str):
                return error(400, "bad_request", checked)
            size = checked
            if definition == "InpaintRequest" and (problem := inpaint_mask(request.form)):
                return error(400, "bad_request", problem)
            self.received.append(request.form["image"])
            if "mask" in request.form:
                self.masks.append(request.form["mask"])
        if reply := self._trigger(form["prompt"]):
            return reply
        finish = "CONTENT_FILTERED" if "FILTERME" in form["prompt"] else "SUCCESS"
        return self._image(request, form, finish, size or (8, 8))

    @staticmethod
    def _typed(form: dict[str, Any]) -> dict[str, Any]:
        """Form parts are text; the schema types numbers and files, so convert as the server would."""
        typed: dict[str, Any] = {}
        for name, value in form.items():
            if name in FILE_FIELDS:
                if not isinstance(value, bytes):
                    raise SchemaViolation(f"{name}: must be a file part (with a filename)")
                typed[name] = "<binary>"
            elif isinstance(value, bytes):
                raise SchemaViolation(f"{name}: must be a text field, not a file")
            elif name in NUMBER_FIELDS:
                try:
                    number = float(value)
                except ValueError:
                    raise SchemaViolation(f"{name}: {value!r} is not a number") from None
                typed[name] = int(number) if number.is_integer() else number
            else:
                typed[name] = value
        return typed

    @staticmethod
    def _check_rules(definition: str, form: dict[str, Any]) -> str | None:
        """The rules the spec states in prose rather than as schema keywords."""
        if definition == "GenerateUltraRequest" and "image" in form and "strength" not in form:
            return "strength: required when image is provided"
        if definition == "GenerateSD3Request":
            if form.get("mode", "text-to-image") == "image-to-image":
                if "image" not in form or "strength" not in form:
                    return "image-to-image requires image and strength"
                if "aspect_ratio" in form:
                    return "aspect_ratio: only valid for text-to-image requests"
            elif "image" in form or "strength" in form:
                return "image, strength: only valid for image-to-image requests"
        return None

    def _trigger(self, prompt: str) -> Reply | None:
        if "BLOCKME" in prompt:
            return error(403, "content_moderation", MODERATION_MESSAGE)
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error(429, "rate_limit_exceeded", "You have exceeded the rate limit of 150 requests "
                         "within a 10 second period; please wait 60 seconds.")  # fmt: skip
        if "FAILME" in prompt:
            return error(500, "internal_error", "An unexpected server error has occurred, please try again.")
        if "FLAKY" in prompt and self.once(prompt):
            # The name is a guess: the spec declares no 503 body.
            return error(503, "service_unavailable", "The service is temporarily unavailable.")
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>upstream proxy error</html>", {"content-type": "text/html"})
        if "EMPTY" in prompt:
            return json_reply({"image": "", "finish_reason": "SUCCESS", "seed": DEFAULT_SEED})
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        return None

    def _image(
        self, request: Recorded, form: dict[str, Any], finish_reason: str, size: tuple[int, int]
    ) -> Reply:
        output_format = form.get("output_format", "png")
        data = IMAGES[output_format](*size)
        seed = form.get("seed") or DEFAULT_SEED
        request_id = f"req-{uuid.uuid4().hex[:16]}"
        if "application/json" in request.headers.get("accept", "image/*"):
            payload = {"image": base64.b64encode(data).decode(), "finish_reason": finish_reason, "seed": seed}
            check_body("stability.json", "GenerateImageJSONResponse", payload)
            return json_reply(
                payload,
                **{"content-type": f"application/json; type={MEDIA_TYPES[output_format]}"},
                **{"x-request-id": request_id},
            )
        headers = {
            "content-type": MEDIA_TYPES[output_format],
            "finish-reason": finish_reason,
            "seed": str(seed),
            "x-request-id": request_id,
        }
        return Reply(200, data, headers)
