"""ByteDance Seedream on BytePlus ModelArk / Volcengine Ark (https://docs.byteplus.com/en/docs/ModelArk).

POST {base}/images/generations (base ".../api/v3"), `Authorization: Bearer <ARK key>`, synchronous JSON.
There is no `n`: one request makes one image. The shipped catalog keeps max_images_per_call at 1, so
generation.py serves n with parallel single-image calls (independent samples, nothing missing). If a
catalog entry allows more (4.x/5.x only), the call uses sequential batch mode
(`sequential_image_generation: auto`, `max_images: n`); the model may return fewer images (warning).
A batch item may carry an `error` instead of an image: failed items are skipped with a warning, and
if every item failed the first item's error is raised (a content refusal for *SensitiveContentDetected
codes, which also arrive as HTTP 400). A top-level `error` in a 200 body (SDK schema) counts the same.

The adapter always asks for `response_format: b64_json`; items that come back as URLs (valid 24 h)
are downloaded. Sizes go as exact "WxH". quality, style, background, moderation and
output_compression have no equivalent and are dropped with a warning; 3.0/4.0/4.5 always answer JPEG,
so only a non-JPEG output_format is sent (5.0 models). Usage: `usage.output_tokens` (no input tokens).

Reference images (edit / image-to-image, 4.x/5.x): there is no edit endpoint; the image goes in the same
JSON body as `image`, a `data:<media_type>;base64,...` string (several input images of an edit: a
list of them, multi-reference, up to the catalog's max_input_images); size and the options below are
sent as for text-to-image. Each image may be at most 10 MB (a 400 naming reference_image before any
call); references plus batch outputs are capped at 15, so batch mode then asks for at most 14. A
flagged reference is InputImageSensitiveContentDetected (a content refusal).
Seedream 4.x has no edit knobs (no strength or mask): edits take the same providerOptions as below.

providerOptions.bytedance:
  watermark             true/false; sent only when given (the upstream default is true: a visible
                        "AI generated" mark bottom-right)
  seed                  integer -1..2147483647 (3.0 t2i; 4.x ignores it, unconfirmed)
  guidance_scale        number 1..10 (3.0 t2i only)
  size                  resolution tier "1K" | "2K" | "3K" | "4K": replaces the WxH size (4.x/5.x)
  optimize_prompt_mode  "standard" | "fast" -> optimize_prompt_options.mode (4.x/5.x; fast: 4.0 only)
  output_format         "jpeg" | "png" (5.0 models only)
Other keys (stream, sequential_image_generation, max_images, ...) are dropped with a warning.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from service.errors import ContentPolicyViolation, MgError, UpstreamError
from service.generation.reference_images import ReferenceImage, refused
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    ProviderUsage,
    adjusted,
    ignored_fields,
    other,
)
from service.providers.options import BOOLEAN, OptionsSchema, integer, number, string
from service.providers.spec import ProviderSpec
from service.providers.upstream import data_items, decode_image, malformed

NAME = "bytedance"
REFUSAL_MARK = "SensitiveContentDetected"  # Input{Text,Image}/OutputImage SensitiveContentDetected
TIERS = ("1K", "2K", "3K", "4K")
MAX_REFERENCE_BYTES = 10 * 1024 * 1024  # "each <= 10 MB" (https://docs.byteplus.com/en/docs/ModelArk)
MAX_IMAGES_IN_AND_OUT = 15  # reference images + generated images in batch mode


OPTIONS = OptionsSchema(
    NAME,
    {
        "watermark": BOOLEAN,
        "seed": integer(-1, 2_147_483_647),
        "guidance_scale": number(1, 10),
        "size": string(*TIERS, fold_case=True),  # replaces the WxH size
        "optimize_prompt_mode": string("standard", "fast"),
        "output_format": string("jpeg", "png"),
    },
)


def _code(error: object) -> str:
    return str(error.get("code") or "") if isinstance(error, dict) else ""


def is_refusal(status: int, body: Any, text: str) -> bool:
    return REFUSAL_MARK in _code(body.get("error") if isinstance(body, dict) else None)


def item_error(error: Mapping[str, Any]) -> MgError:
    """The error a failed image (or a 200 with a top-level error) stands for."""
    code, message = _code(error), str(error.get("message") or "no message")
    if REFUSAL_MARK in code:
        return ContentPolicyViolation(f"{NAME}: {message}")
    return UpstreamError(f"{NAME}: {code or 'error'}: {message}")


def data_url(image: ReferenceImage) -> str:
    """The reference as the `image` field: a base64 data URL (the gateway never passes the caller's URL)."""
    if len(image.data) > MAX_REFERENCE_BYTES:
        raise refused(f"reference_image is larger than Seedream's limit of {MAX_REFERENCE_BYTES} bytes.")
    return f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for POST /images/generations."""
    options, warnings = OPTIONS.parse(call)
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "prompt": call.prompt,
        "size": str(call.size),
        "response_format": "b64_json",
    }
    if call.input_images:
        urls = [data_url(image) for image in call.input_images]
        body["image"] = urls[0] if len(urls) == 1 else urls
    warnings += ignored_fields(call, "Seedream")
    if call.output_format and call.output_format != "jpeg":
        body["output_format"] = call.output_format
    if call.n > 1:
        references = len(call.input_images)
        body["sequential_image_generation"] = "auto"
        body["sequential_image_generation_options"] = {
            "max_images": min(call.n, MAX_IMAGES_IN_AND_OUT - references)
        }
    for key, value in options.items():
        if key == "optimize_prompt_mode":
            body["optimize_prompt_options"] = {"mode": value}
        else:
            body[key] = value
        if key == "size":
            warnings.append(
                adjusted("size", f"{call.size} replaced by the {value} tier ({OPTIONS.param(key)})")
            )
    return body, warnings


def parse_usage(payload: Mapping[str, Any]) -> ProviderUsage | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    return ProviderUsage.reported(output_tokens=usage.get("output_tokens"))


class BytedanceProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        payload, response = await self._upstream.json_object(
            "POST", "/images/generations", call.deadline, json=body
        )
        items = data_items(self.name, payload)
        succeeded = [item for item in items if not isinstance(item.get("error"), dict)]
        failed = [item["error"] for item in items if isinstance(item.get("error"), dict)]
        top = payload.get("error")
        if isinstance(top, dict) and (top.get("code") or top.get("message")):
            failed.append(top)
        if failed and not succeeded:
            raise item_error(failed[0])
        images = await asyncio.gather(*(self._image(item, call.deadline) for item in succeeded))
        if failed:
            first = failed[0]
            reason = f"{_code(first) or 'error'}: {first.get('message') or 'no message'}"
            warnings.append(other("n", f"{len(failed)} image(s) failed upstream and were skipped: {reason}"))
        if call.n > 1 and len(items) < call.n:
            warnings.append(other("n", f"{self.name} returned {len(items)} of {call.n} images in batch mode"))
        return ImageCallResult(
            images=images,
            usage=parse_usage(payload),
            upstream_request_id=response.headers.get("x-request-id"),
            warnings=warnings,
        )

    async def _image(self, item: Mapping[str, Any], deadline: float) -> GeneratedImage:
        if item.get("b64_json"):
            data, media_type = decode_image(self.name, item["b64_json"])
        elif isinstance(item.get("url"), str) and item["url"]:
            data, media_type = await self._upstream.download(item["url"], deadline)
        else:
            raise malformed(self.name, "an image item with neither b64_json nor url")
        return GeneratedImage(data, media_type)


PROVIDER = ProviderSpec(
    NAME,
    BytedanceProvider.create,
    OPTIONS,
    credentials=("ARK_API_KEY",),
    base_url_env="ARK_BASE_URL",
    default_base_url="https://ark.ap-southeast.bytepluses.com/api/v3",
    summary="ByteDance Seedream on BytePlus ModelArk",
)
