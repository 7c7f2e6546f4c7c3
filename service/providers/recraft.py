"""Recraft external API: recraftv3 and recraftv2, raster output (shared/providers/recraft.md).

POST {base}/images/generations, Bearer auth, an OpenAI-shaped JSON body; synchronous. Images are asked
for as base64 (`response_format: b64_json`); answers that carry `url` instead are downloaded. Sizes are
sent as the exact "WxH" from Recraft's table (the catalog offers only those); `n` goes up to 6.
quality and style (vivid/natural) have no Recraft equivalent and are dropped with a warning;
output_format png/webp becomes `image_format` (in the published OpenAPI model; unconfirmed in prose).

With a reference_image the call goes to POST {base}/images/imageToImage as multipart/form-data: the
bytes as the file part `image`, the other fields as text parts (same answer shape). Recraft takes PNG,
JPEG or WebP with sides of 256-4096 px; a GIF or a smaller/larger image is a 400 naming
reference_image before any call. The endpoint has no `size` (a differing size is dropped with a
warning); `controls` and `text_layout` exist only in its JSON form and are dropped with a warning.

providerOptions.recraft (anything else is dropped with a warning):
  style            base style (any, realistic_image, digital_illustration, logo_raster, ...) or a named
                   style; vector styles (vector_illustration, icon, names with "vector") are refused
                   with a 400, because they answer SVG, which the gateway cannot return
  substyle         must belong to `style`
  style_id         UUID of a custom style; not together with `style`
  negative_prompt  text (V3 only; dropped with a warning on V2)
  controls         {artistic_level, colors: [{rgb}], background_color: {rgb}, no_text} (not with a
                   reference image)
  text_layout      [{text, bbox}] (V3 only; dropped with a warning on V2 and with a reference image)
  random_seed      integer
  strength         image-to-image only: number 0-1, 0 keeps the reference, 1 ignores it; default 0.5
                   (the gateway's mapping in the doc; Recraft requires the field). Without a reference
                   image it is dropped with a warning.
A custom style_id may still be a vector style: an SVG answer is a 502 that says so.
Recraft reports no tokens (it reports `credits`, API units), so usage is None.
"""

from __future__ import annotations

from typing import Any

from service.config import ProviderConfig, Settings
from service.errors import BadRequest, UpstreamError
from service.generation.reference_images import ReferenceImage, refused
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult, ignored_fields
from service.providers.upstream import (
    Upstream,
    data_items,
    decode_image,
    malformed,
    provider_message,
    revised_prompt,
)

OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "style": str,
    "substyle": str,
    "style_id": str,
    "negative_prompt": str,
    "controls": dict,
    "text_layout": list,
    "random_seed": (int, float),
    "strength": (int, float),
}
V3_ONLY = ("negative_prompt", "text_layout")
JSON_ONLY = ("controls", "text_layout")  # imageToImage takes these only in its JSON form
DEFAULT_STRENGTH = 0.5
VECTOR_STYLES = frozenset({"vector_illustration", "icon"})
IMAGE_FORMATS = frozenset({"png", "webp"})
# What imageToImage accepts (doc section 3): media type -> file extension, and the side limits.
REFERENCE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MIN_SIDE, MAX_SIDE = 256, 4096
REFUSAL_CODES = frozenset({"content_policy", "content_policy_violation", "nsfw", "prohibited_content"})
REFUSAL_WORDS = ("nsfw", "prohibited content", "content policy", "inappropriate content")
# base64 of "<svg" and of "<?xml": how a vector answer starts.
SVG_B64_PREFIXES = ("PHN2Zy", "PD94bWw")


def is_refusal(status: int, body: Any, text: str) -> bool:
    """Recraft's error envelope is unconfirmed: a refusal code, or a 400 whose message says so."""
    if isinstance(body, dict):
        error = body.get("error")
        codes = {body.get("code"), error.get("code") if isinstance(error, dict) else None}
        if codes & REFUSAL_CODES:
            return True
    message = provider_message(body, text).lower()
    return status == 400 and any(word in message for word in REFUSAL_WORDS)


def _bad_option(name: str, message: str) -> BadRequest:
    return BadRequest(f"providerOptions.recraft.{name} {message}", param=f"providerOptions.recraft.{name}")


def _options(call: ImageCall, warnings: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in call.options.items():
        expected = OPTION_TYPES.get(name)
        if expected is None:
            continue
        if isinstance(value, bool) or not isinstance(value, expected):
            raise _bad_option(name, f"has the wrong type ({type(value).__name__})")
        if name in V3_ONLY and not call.upstream_model.startswith("recraftv3"):
            warnings.append(
                f"providerOptions.recraft.{name} ignored: {call.upstream_model} does not support it"
            )
            continue
        options[name] = value
    seed = options.get("random_seed")
    if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise _bad_option("random_seed", "must be an integer from 0 to 4294967295")
    if not 0 <= options.get("strength", DEFAULT_STRENGTH) <= 1:
        raise _bad_option("strength", "must be a number from 0 to 1")
    style = options.get("style")
    if isinstance(style, str) and (style.lower() in VECTOR_STYLES or "vector" in style.lower()):
        raise _bad_option(
            "style", f"{style!r} is a vector style: it answers SVG, which this gateway cannot return"
        )
    if "style" in options and "style_id" in options:
        raise _bad_option("style_id", "cannot be combined with providerOptions.recraft.style")
    unknown = sorted(set(call.options) - set(OPTION_TYPES))
    if unknown:
        warnings.append(f"providerOptions.recraft keys ignored: {', '.join(unknown)}")
    return options


def _common(call: ImageCall, warnings: list[str]) -> dict[str, Any]:
    """The fields generations and imageToImage share, and warnings for what neither can honour."""
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "prompt": call.prompt,
        "n": call.n,
        "response_format": "b64_json",
    }
    if call.output_format in IMAGE_FORMATS:
        body["image_format"] = call.output_format
    elif call.output_format:
        warnings.append(f"output_format {call.output_format!r} ignored: Recraft answers png or webp")
    if call.quality:
        warnings.append(f"quality {call.quality!r} ignored: Recraft has no quality setting")
    if call.style:
        warnings.append(f"style {call.style!r} ignored: use providerOptions.recraft.style for Recraft styles")
    warnings += ignored_fields(call, "Recraft", ("background", "moderation", "output_compression"))
    body.update(_options(call, warnings))
    return body


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[str]]:
    """(JSON body, warnings) for POST /images/generations."""
    warnings: list[str] = []
    body = _common(call, warnings)
    body["size"] = str(call.size)
    if body.pop("strength", None) is not None:
        warnings.append("providerOptions.recraft.strength ignored: it applies only with a reference_image")
    return body, warnings


def _check_reference(reference: ReferenceImage) -> str:
    """The file extension Recraft expects for this reference image; a 400 if Recraft cannot take it."""
    extension = REFERENCE_TYPES.get(reference.media_type)
    if extension is None:
        raise refused(f"Recraft image-to-image takes PNG, JPEG or WebP, not {reference.media_type}.")
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in (reference.width, reference.height)):
        raise refused(
            f"Recraft image-to-image takes images with sides of {MIN_SIDE}-{MAX_SIDE} px, "
            f"not {reference.width}x{reference.height}."
        )
    return extension


def image_to_image_form(
    call: ImageCall, reference: ReferenceImage
) -> tuple[dict[str, str], tuple[str, bytes, str], list[str]]:
    """(text parts, the `image` file part, warnings) for POST /images/imageToImage."""
    extension = _check_reference(reference)
    warnings: list[str] = []
    body = _common(call, warnings)
    body.setdefault("strength", DEFAULT_STRENGTH)
    for name in JSON_ONLY:
        if body.pop(name, None) is not None:
            warnings.append(f"providerOptions.recraft.{name} ignored: Recraft image-to-image lacks it")
    if (call.size.width, call.size.height) != (reference.width, reference.height):
        warnings.append(f"size {call.size} ignored: Recraft image-to-image has no size setting")
    fields = {name: str(value) for name, value in body.items()}
    return fields, (f"reference.{extension}", reference.data, reference.media_type), warnings


class RecraftProvider:
    name = "recraft"

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> RecraftProvider:
        headers = {"Authorization": f"Bearer {config.api_key}"}
        return cls(Upstream.from_config(config, settings, headers, is_refusal))

    async def generate(self, call: ImageCall) -> ImageCallResult:
        if call.reference_image is None:
            body, warnings = request_body(call)
            payload, _ = await self._upstream.json_object(
                "POST", "/images/generations", call.deadline, json=body
            )
        else:
            fields, image, warnings = image_to_image_form(call, call.reference_image)
            payload, _ = await self._upstream.json_object(
                "POST", "/images/imageToImage", call.deadline, data=fields, files={"image": image}
            )
        images = [await self._image(item, call.deadline) for item in data_items(self.name, payload)]
        return ImageCallResult(images=images, warnings=warnings)

    async def _image(self, item: object, deadline: float) -> GeneratedImage:
        if not isinstance(item, dict):
            raise malformed(self.name, "an image entry that is not an object")
        b64, url = item.get("b64_json"), item.get("url")
        if isinstance(b64, str) and b64.startswith(SVG_B64_PREFIXES):
            raise self._vector()
        if b64:
            data, media_type = decode_image(self.name, b64)
        elif isinstance(url, str) and url:
            if url.split("?")[0].lower().endswith(".svg"):
                raise self._vector()
            data, media_type = await self._upstream.download(url, deadline)
        else:
            raise malformed(self.name, "an image without b64_json or url")
        return GeneratedImage(data, media_type, revised_prompt(item))

    def _vector(self) -> UpstreamError:
        return malformed(
            self.name, "an SVG (vector) image, which the gateway cannot return; use a raster style"
        )

    async def aclose(self) -> None:
        await self._upstream.aclose()
