"""xAI image API: the grok-imagine-image models (https://docs.x.ai/docs/guides/image-generations).

POST {base}/images/generations, Bearer auth, OpenAI-like JSON but with no `size`, `quality` or `style`
(xAI rejects `size`; its protocol definition has no quality field). The requested WxH becomes
`aspect_ratio` (W:H reduced and looked up in xAI's list; the catalog offers only sizes that map exactly)
plus `resolution: "2k"` when the longer side is above 1024 (else "1k"). The adapter always asks for
`b64_json`; URL answers are downloaded. Output is JPEG.

Moderation arrives inside a 200: a blocked image is a placeholder item with `respect_moderation: false`
and no data. All items blocked -> ContentPolicyViolation; some blocked -> the others are returned with
a warning. A prompt refused at the HTTP level (400 naming moderation) is a refusal too.
xAI reports no tokens; `usage.cost_in_usd_ticks` (1e10 ticks per USD) is kept as a warning line.

providerOptions.xai: `aspect_ratio` (one of xAI's ratios, or "auto"; wins over the one derived from
the size) and `resolution` ("1k" | "2k"; wins over the derived one). Other keys are dropped with a
warning, as are quality, style, background, moderation and output_compression.

A reference image makes the call an edit: POST {base}/images/edits, the same JSON body plus
`image: {"url": "data:<media type>;base64,<data>", "type": "image_url"}` (xAI takes PNG, JPEG or WebP
up to 10 MiB: a GIF is converted to PNG, first frame, and a larger image is refused before calling).
aspect_ratio and resolution are sent as for a generation; "auto" is generation-only, so on an edit it
falls back to the ratio derived from the size, with a warning. An edit's several input images (up
to 3) go as `images`, a list of the same objects. No edit-specific options (xAI has no mask or
strength); the answer has the generation's shape.
"""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal
from fractions import Fraction
from typing import Any

from service.catalog.sizes import Size
from service.errors import BadRequest, ContentPolicyViolation, InvalidSize
from service.generation.reference_images import ReferenceImage
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    adjusted,
    ignored_fields,
    other,
    unsupported,
)
from service.providers.options import OptionsSchema, string
from service.providers.spec import ProviderSpec
from service.providers.upstream import data_items, provider_message, revised_prompt

NAME = "xai"

# xAI's aspect ratios (REST spelling), keyed by their reduced fraction; "auto" only via providerOptions.
RATIOS = ["1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9", "1:2", "2:1"]
_BY_FRACTION = {Fraction(*(Fraction(p) for p in label.split(":"))): label for label in RATIOS}
RESOLUTIONS = ("1k", "2k")
OPTIONS = OptionsSchema(NAME, {"aspect_ratio": string(*RATIOS, "auto"), "resolution": string(*RESOLUTIONS)})
TICKS_PER_USD = 10_000_000_000
EDIT_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
REFUSAL_WORDS = ("moderation", "content policy", "content_policy", "safety", "inappropriate")


def is_refusal(status: int, body: Any, text: str) -> bool:
    """A 400 whose message (either envelope) speaks of moderation; the wording is unconfirmed."""
    if status != 400:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code") in ("content_policy_violation", "moderation_blocked"):
        return True
    message = provider_message(body, text).lower()
    return any(word in message for word in REFUSAL_WORDS)


def is_credential_error(status: int, body: Any, text: str) -> bool:
    """xAI answers a wrong key with 400 "Incorrect API key provided": the gateway's fault."""
    return status == 400 and "api key" in provider_message(body, text).lower()


def aspect_and_resolution(size: Size) -> tuple[str, str]:
    """("W:H" from xAI's list, "1k"|"2k") for a size; a size with another ratio is a 400."""
    label = _BY_FRACTION.get(size.aspect_ratio)
    if label is None:
        raise InvalidSize(
            f"xai takes an aspect ratio, and {size} is not one of {', '.join(RATIOS)}.", param="size"
        )
    return label, "2k" if max(size.width, size.height) > 1024 else "1k"


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for POST /images/generations."""
    aspect_ratio, resolution = aspect_and_resolution(call.size)
    options, warnings = OPTIONS.parse(call)
    chosen: dict[str, str] = {"aspect_ratio": aspect_ratio, "resolution": resolution, **options}
    if call.reference_image is not None and chosen["aspect_ratio"] == "auto":
        chosen["aspect_ratio"] = aspect_ratio
        warnings.append(
            adjusted(
                OPTIONS.param("aspect_ratio"), f"auto asked; xai edits take a ratio, sent {aspect_ratio}"
            )
        )
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "prompt": call.prompt,
        "n": call.n,
        **chosen,
        "response_format": "b64_json",
    }
    if call.user:
        body["user"] = call.user
    warnings += ignored_fields(call, "xai")
    if call.output_format not in (None, "jpeg"):
        warnings.append(unsupported("output_format", f"{call.output_format!r} asked; xai returns JPEG"))
    return body, warnings


def reference_url(reference: ReferenceImage) -> str:
    """The reference image as the data: URL of an edit's `image.url`."""
    data, media_type = reference.in_formats(EDIT_TYPES)  # xAI takes PNG, JPEG and WebP only
    if len(data) > MAX_REFERENCE_BYTES:
        raise BadRequest(
            f"xai takes reference images of at most 10 MiB; this one is {len(data)} bytes.",
            param="reference_image",
        )
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def cost_warning(payload: dict[str, Any]) -> CallWarning | None:
    """xAI's own cost report (int, or int64 as a string), kept for logs; it is not token usage."""
    usage = payload.get("usage")
    ticks = usage.get("cost_in_usd_ticks") if isinstance(usage, dict) else None
    try:
        value = int(ticks) if isinstance(ticks, int | str) and not isinstance(ticks, bool) else None
    except ValueError:
        return None
    if value is None:
        return None
    return other("cost", f"xai reported cost_in_usd_ticks={value} (USD {Decimal(value) / TICKS_PER_USD:.6f})")


class XAIProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)
    is_credential_error = staticmethod(is_credential_error)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        path = "/images/generations"
        if call.input_images:
            urls = [await asyncio.to_thread(reference_url, picture) for picture in call.input_images]
            pictures = [{"url": url, "type": "image_url"} for url in urls]
            if len(pictures) == 1:
                body["image"] = pictures[0]
            else:
                body["images"] = pictures
            path = "/images/edits"
        payload, response = await self._upstream.json_object("POST", path, call.deadline, json=body)
        items = data_items(self.name, payload)
        kept = [item for item in items if item.get("respect_moderation") is not False]
        blocked = len(items) - len(kept)
        if blocked and not kept:
            raise ContentPolicyViolation(
                f"{self.name}: the image was blocked by xAI's moderation (respect_moderation: false)."
            )
        if blocked:
            warnings.append(other("n", f"xai moderation blocked {blocked} of {len(items)} images"))
        decoded = await asyncio.gather(*(self._upstream.item_image(item, call.deadline) for item in kept))
        images = [
            GeneratedImage(data, media_type, revised_prompt(item))
            for item, (data, media_type) in zip(kept, decoded, strict=True)
        ]
        if (cost := cost_warning(payload)) is not None:
            warnings.append(cost)
        return ImageCallResult(
            images=images, upstream_request_id=response.headers.get("x-request-id"), warnings=warnings
        )


PROVIDER = ProviderSpec(
    NAME,
    XAIProvider.create,
    OPTIONS,
    credentials=("XAI_API_KEY",),
    base_url_env="XAI_BASE_URL",
    default_base_url="https://api.x.ai/v1",
    summary="xAI image API (grok-imagine)",
)
