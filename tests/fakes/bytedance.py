"""A fake of ByteDance Seedream on BytePlus ModelArk (POST /api/v3/images/generations), from
https://docs.byteplus.com/en/docs/ModelArk and the Volcengine SDK schema (bytedance-seedream.json): Bearer
auth, per-model size rules (WxH ranges and 1K-4K tiers), b64 or URL items (URLs served by the fake),
sequential batch mode with per-item errors, usage with generated_images/output_tokens, request ids,
and Ark's error envelope {"error": {code, message, param, type}}. Reference images arrive in the same
body as `image` (a string or a list; 4.x/5.x only, up to 10 on 4.0 and 14 on 4.5/5.0, references plus
batch outputs <= 15): data URLs must be base64 of an image of the declared format, at most 10 MB, that
decodes; http(s) URLs are accepted unfetched.

Triggers beyond the shared ones (tests/fakes/base.py):
  BLOCKOUTPUT  output flagged: 400 OutputImageSensitiveContentDetected for a single image; in batch
               mode a 200 whose every item carries that error
  PARTIAL      batch mode: the last item carries an OutputImageSensitiveContentDetected error
  ITEMFAIL     batch mode: every item carries an InternalServiceError error (a 200)
  FEWER        batch mode: the model returns one image whatever max_images says
  BLOCKIMAGE   with an `image`: 400 InputImageSensitiveContentDetected (the reference is flagged)
Set `force_url = True` to answer with links even when b64_json is asked for (the download path).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tests.fakes.base import SLOW_S, FakeProvider, Recorded, Reply, check_body, jpeg, json_reply, png

BASE = "/api/v3"
SCHEMA = "bytedance-seedream.json"
TIER_SIDES = {"1K": 1024, "2K": 2048, "3K": 3072, "4K": 4096}  # the 1:1 output of each tier
_WXH = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|webp|gif|bmp|tiff);base64,(.*)$", re.DOTALL)
MAX_REFERENCE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Model:
    tiers: frozenset[str]
    min_pixels: int
    max_pixels: int
    side_range: tuple[int, int] | None = None  # 3.0 t2i: each side within it
    batch: bool = True  # sequential_image_generation, optimize_prompt_options
    output_format: bool = False  # 5.0 family only
    max_references: int = 14  # `image` entries (0: text-to-image only)


MODELS = {
    "seedream-3-0-t2i-250415": Model(
        frozenset(), 512 * 512, 2048 * 2048, (512, 2048), batch=False, max_references=0
    ),
    "seedream-4-0-250828": Model(frozenset({"1K", "2K", "4K"}), 1280 * 720, 4096 * 4096, max_references=10),
    "seedream-4-5-251128": Model(frozenset({"2K", "4K"}), 3_686_400, 4096 * 4096),
    "seedream-5-0-260128": Model(frozenset({"2K", "3K"}), 3_686_400, 4096 * 4096, output_format=True),
}
SENSITIVE_INPUT = "The request failed because the input text may contain sensitive information."
SENSITIVE_OUTPUT = "The request failed because the output image may contain sensitive information."
SENSITIVE_IMAGE = "The request failed because the input image may contain sensitive information."


def error(code: str, message: str, status: int = 400, *, param: str = "", type_: str = "BadRequest",
          **headers: str) -> Reply:  # fmt: skip
    request_id = f"0217{uuid.uuid4().hex[:24]}"
    body = {"error": {"code": code, "message": f"{message} Request id: {request_id}", "param": param,
                      "type": type_}}  # fmt: skip
    return json_reply(body, status, **{"x-request-id": request_id, **headers})


def invalid(message: str, param: str) -> Reply:
    return error("InvalidParameter", f"The parameter `{param}` specified in the request is not valid: "
                 f"{message}.", param=param)  # fmt: skip


class FakeSeedream(FakeProvider):
    PROVIDER = "bytedance"
    BASE_PATH = "/api/v3"
    SMOKE_MODEL = "bytedance/seedream-4.0"
    SMOKE_SIZE = "2048x2048"
    api_key = "ark-fake-bytedance"
    force_url = False

    def __init__(self) -> None:
        super().__init__()
        self.references: list[bytes] = []  # every data-URL reference image, decoded, as it arrived

    def reset(self) -> None:
        super().reset()
        self.references.clear()

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/files/"):  # signed TOS links: no auth
            if request.path.endswith(".png"):
                return Reply(200, png(), {"content-type": "image/png"})
            return Reply(200, jpeg(), {"content-type": "image/jpeg"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error("AuthenticationError", "the API key or AK/SK in the request is missing or invalid.",
                         401, type_="Unauthorized")  # fmt: skip
        if (request.method, request.path) != ("POST", f"{BASE}/images/generations"):
            return error(
                "NotFound", f"The requested path {request.path} was not found.", 404, type_="NotFound"
            )
        check_body(SCHEMA, "GenerateImagesRequest", request.json)
        body: dict[str, Any] = request.json
        model = MODELS.get(body["model"])
        if model is None:
            message = f"Your account has not activated the model {body['model']}. Please activate it."
            return error("ModelNotOpen", message, 404, type_="NotFound")
        if problem := self._check(model, body):
            return problem
        return self._trigger(body["prompt"], body) or self._answer(model, body)

    def _check(self, model: Model, body: dict[str, Any]) -> Reply | None:
        size = body.get("size", "2048x2048" if model.tiers else "1024x1024")
        if size not in model.tiers:
            match = _WXH.match(size)
            if not match:
                return invalid(f"size {size!r} is not a supported tier or WxH", "size")
            width, height = int(match.group(1)), int(match.group(2))
            low, high = model.side_range or (1, 1 << 30)
            if not (model.min_pixels <= width * height <= model.max_pixels and 1 / 16 <= width / height <= 16
                    and low <= width <= high and low <= height <= high):  # fmt: skip
                return invalid(f"size {size} is out of the range the model supports", "size")
        if not model.batch:
            for name in ("sequential_image_generation", "optimize_prompt_options"):
                if name in body:
                    return invalid(f"{name} is not supported by this model", name)
        if "output_format" in body and not model.output_format:
            return invalid("output_format is only supported by seedream 5.0 models", "output_format")
        if not 1 <= body.get("guidance_scale", 2.5) <= 10:
            return invalid("guidance_scale must be between 1 and 10", "guidance_scale")
        if not -1 <= body.get("seed", -1) <= 2_147_483_647:
            return invalid("seed must be between -1 and 2147483647", "seed")
        if "image" in body and (problem := self._check_images(model, body["image"])):
            return problem
        max_images = body.get("sequential_image_generation_options", {}).get("max_images", 15)
        if not 1 <= max_images <= 15:
            return invalid("max_images must be between 1 and 15", "sequential_image_generation_options")
        references = len(body["image"]) if isinstance(body.get("image"), list) else int("image" in body)
        if body.get("sequential_image_generation") == "auto" and references + max_images > 15:
            message = "reference images plus max_images must not exceed 15"
            return invalid(message, "sequential_image_generation_options")
        if body.get("stream"):
            return invalid("this fake does not stream", "stream")
        return None

    def _check_images(self, model: Model, image: str | list[str]) -> Reply | None:
        images = image if isinstance(image, list) else [image]
        if not model.max_references:
            return invalid("image is not supported by this model", "image")
        if not 1 <= len(images) <= model.max_references:
            return invalid(f"image must hold 1 to {model.max_references} images", "image")
        for item in images:
            if item.startswith(("http://", "https://")):
                continue  # the real service fetches it; the fake takes it on trust
            match = _DATA_URL.match(item)
            if not match:
                return invalid("image must be a URL or data:image/<format>;base64,<data>", "image")
            try:
                data = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                return invalid("image holds invalid base64", "image")
            if len(data) > MAX_REFERENCE_BYTES:
                return invalid("image must be at most 10 MB", "image")
            try:
                with Image.open(io.BytesIO(data)) as decoded:
                    decoded.load()
                    actual = (decoded.format or "").lower()
            except (OSError, ValueError):
                return invalid("image is not a readable image", "image")
            declared = {"jpg": "jpeg"}.get(match.group(1), match.group(1))
            if actual != declared:
                return invalid(f"image is {actual}, not the declared {declared}", "image")
            self.references.append(data)
        return None

    def _trigger(self, prompt: str, body: dict[str, Any]) -> Reply | None:
        if "BLOCKME" in prompt:
            return error("InputTextSensitiveContentDetected", SENSITIVE_INPUT)
        if "BLOCKIMAGE" in prompt and "image" in body:
            return error("InputImageSensitiveContentDetected", SENSITIVE_IMAGE)
        if "BLOCKOUTPUT" in prompt and body.get("sequential_image_generation") != "auto":
            return error("OutputImageSensitiveContentDetected", SENSITIVE_OUTPUT)
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            message = "The request has exceeded the rate limit for this model. Please retry later."
            return error("RateLimitExceeded", message, 429, type_="TooManyRequests", **{"retry-after": "1"})
        if "FAILME" in prompt:
            return error("InternalServiceError", "The service encountered an unexpected internal error.",
                         500, type_="InternalServiceError")  # fmt: skip
        if "FLAKY" in prompt and self.once(prompt):
            return error("ServiceUnavailable", "The service is temporarily unavailable.", 503,
                         type_="ServiceUnavailable")  # fmt: skip
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>502 Bad Gateway</html>", {"content-type": "text/html"})
        if "EMPTY" in prompt:
            return self._reply(body, [], 0)
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        return None

    def _answer(self, model: Model, body: dict[str, Any]) -> Reply:
        size = body.get("size", "2048x2048" if model.tiers else "1024x1024")
        if size in TIER_SIDES:
            size = f"{TIER_SIDES[size]}x{TIER_SIDES[size]}"
        prompt, batch = body["prompt"], body.get("sequential_image_generation") == "auto"
        max_images = body.get("sequential_image_generation_options", {}).get("max_images", 15)
        count = 1 if not batch or "FEWER" in prompt else max_images
        items: list[dict[str, Any]] = [self._item(body, size) for _ in range(count)]
        if batch:
            failure = {"code": "OutputImageSensitiveContentDetected", "message": SENSITIVE_OUTPUT}
            if "PARTIAL" in prompt:
                items[-1] = {"error": failure}
            if "BLOCKOUTPUT" in prompt:
                items = [{"error": failure} for _ in items]
            if "ITEMFAIL" in prompt:
                items = [{"error": {"code": "InternalServiceError", "message": "Image generation failed."}}
                         for _ in items]  # fmt: skip
        width, height = (int(side) for side in size.split("x"))
        succeeded = sum("error" not in item for item in items)
        return self._reply(body, items, succeeded * width * height // 256)

    def _item(self, body: dict[str, Any], size: str) -> dict[str, Any]:
        fmt = body.get("output_format", "jpeg")
        if body.get("response_format", "url") == "b64_json" and not self.force_url:
            image = png() if fmt == "png" else jpeg()
            return {"b64_json": base64.b64encode(image).decode(), "size": size}
        return {"url": f"{self.url}/files/{uuid.uuid4().hex}.{fmt}", "size": size}

    def _reply(self, body: dict[str, Any], items: list[dict[str, Any]], tokens: int) -> Reply:
        succeeded = sum("error" not in item for item in items)
        payload = {
            "model": body["model"],
            "created": int(time.time()),
            "data": items,
            "usage": {"generated_images": succeeded, "output_tokens": tokens, "total_tokens": tokens},
        }
        check_body(SCHEMA, "ImagesResponse", payload)  # what the fake promises is what the SDKs define
        return json_reply(payload, **{"x-request-id": f"0217{uuid.uuid4().hex[:24]}"})
