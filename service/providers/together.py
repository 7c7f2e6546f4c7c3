"""Together AI images: POST {base}/images/generations, synchronous, Bearer auth.

The body is OpenAI-like with Together's own fields (its OpenAPI ImageRequest): `model`, `prompt`,
`n` (the catalog keeps it at most 4), the size as `width` / `height`, `response_format: base64`
(Together's word for b64_json; the adapter always asks for it, and downloads a `url` item should one
come), `output_format` jpeg/png, and for the Kontext models the reference image as `image_url` (a
data: URL). Each answer item is {index, type, b64_json | url}; the answer's `id` is the upstream
request id. quality, style, background, moderation and output_compression have no equivalent and
are dropped with a warning.

Errors come in the OpenAI envelope ({"error": {"message", "type", ...}}, some endpoints a flat
{"error": "..."}); a 400/422 whose message speaks of NSFW content, a safety check or moderation is
a content refusal (Together documents no refusal code of its own). 429 and 5xx are retried within
the deadline (upstream.py).

providerOptions.together: seed (int), steps (int 1-50; Together's default is 20, its FLUX.1
[schnell] takes at most 12), guidance_scale (number 0-20), negative_prompt (string),
disable_safety_checker (bool), and image_loras (a list of {path, scale}) on the models that take
LoRAs (FLUX.1 [dev] and its LoRA variant).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from service.errors import EditNotSupported
from service.providers.adapter import HttpAdapter
from service.providers.base import CallWarning, GeneratedImage, ImageCall, ImageCallResult, ignored_fields
from service.providers.options import ARRAY, BOOLEAN, OptionsSchema, integer, models, number, string
from service.providers.request_fields import offered_format
from service.providers.spec import ProviderSpec
from service.providers.upstream import data_items, provider_message

NAME = "together"
OPTIONS = OptionsSchema(
    NAME,
    {
        "seed": integer(0, 2**32 - 1),
        "steps": integer(1, 50),
        "guidance_scale": number(0, 20),
        "negative_prompt": string(),
        "disable_safety_checker": BOOLEAN,
        "image_loras": ARRAY.where(models("black-forest-labs/FLUX.1-dev")),
    },
)
REFERENCE_MODELS = frozenset({"black-forest-labs/FLUX.1-kontext-pro", "black-forest-labs/FLUX.1-kontext-max"})
OUTPUT_FORMATS = frozenset({"jpeg", "png"})
REFUSAL_WORDS = ("nsfw", "safety", "moderat", "content policy")


def is_refusal(status: int, body: Any, text: str) -> bool:
    return status in (400, 422) and any(
        word in provider_message(body, text).lower() for word in REFUSAL_WORDS
    )


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for POST /images/generations."""
    options, warnings = OPTIONS.parse(call)
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "prompt": call.prompt,
        "n": call.n,
        "width": call.size.width,
        "height": call.size.height,
        "response_format": "base64",
    }
    if output_format := offered_format(call, OUTPUT_FORMATS):
        body["output_format"] = output_format
    if call.reference_image is not None:
        if call.upstream_model not in REFERENCE_MODELS:
            raise EditNotSupported(
                f"{call.upstream_model} cannot take a reference_image.", param="reference_image"
            )
        data, media_type = call.reference_image.in_formats(("image/png", "image/jpeg", "image/webp"))
        body["image_url"] = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
    warnings += ignored_fields(call, "Together")
    body.update(options)
    return body, warnings


class TogetherProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        payload, _ = await self._upstream.json_object("POST", "/images/generations", call.deadline, json=body)
        items = data_items(self.name, payload)
        fetched = await asyncio.gather(*(self._upstream.item_image(item, call.deadline) for item in items))
        request_id = payload.get("id")
        return ImageCallResult(
            images=[GeneratedImage(data, media_type) for data, media_type in fetched],
            upstream_request_id=request_id if isinstance(request_id, str) else None,
            warnings=warnings,
        )


PROVIDER = ProviderSpec(
    NAME,
    TogetherProvider.create,
    OPTIONS,
    credentials=("TOGETHER_API_KEY",),
    base_url_env="TOGETHER_BASE_URL",
    default_base_url="https://api.together.xyz/v1",
    summary="Together AI images API",
)
