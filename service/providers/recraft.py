"""Recraft external API: recraftv3 and recraftv2, raster output (https://www.recraft.ai/docs).

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
  random_seed      integer 0-4294967295
  strength         image-to-image only: number 0-1, 0 keeps the reference, 1 ignores it; default 0.5
                   (the gateway's mapping in the doc; Recraft requires the field). Without a reference
                   image it is dropped with a warning.
A custom style_id may still be a vector style: an SVG answer is a 502 that says so.
Recraft reports no tokens (it reports `credits`, API units), so usage is None.
"""

from __future__ import annotations

from typing import Any

from service.errors import BadRequest, UpstreamError
from service.generation.reference_images import ReferenceImage, refused
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    ignored_fields,
    unsupported,
)
from service.providers.options import (
    ARRAY,
    OBJECT,
    OptionsSchema,
    integer,
    models,
    number,
    string,
    with_reference,
    without_reference,
)
from service.providers.spec import ProviderSpec
from service.providers.upstream import data_items, decode_image, malformed, provider_message, revised_prompt

NAME = "recraft"
V3 = models("recraftv3")
OPTIONS = OptionsSchema(
    NAME,
    {
        "style": string(),
        "substyle": string(),
        "style_id": string(),
        "negative_prompt": string().where(V3),
        # imageToImage takes controls and text_layout only in its JSON form, which is not used
        "controls": OBJECT.where(without_reference),
        "text_layout": ARRAY.where(V3, without_reference),
        "random_seed": integer(0, 2**32 - 1),
        "strength": number(0, 1).where(with_reference),
    },
)
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
    return BadRequest(f"{OPTIONS.param(name)} {message}", param=OPTIONS.param(name))


def _options(call: ImageCall, warnings: list[CallWarning]) -> dict[str, Any]:
    options, left_out = OPTIONS.parse(call)
    warnings += left_out
    style = options.get("style")
    if isinstance(style, str) and (style.lower() in VECTOR_STYLES or "vector" in style.lower()):
        raise _bad_option(
            "style", f"{style!r} is a vector style: it answers SVG, which this gateway cannot return"
        )
    if "style" in options and "style_id" in options:
        raise _bad_option("style_id", "cannot be combined with providerOptions.recraft.style")
    return options


def _common(call: ImageCall, warnings: list[CallWarning]) -> dict[str, Any]:
    """The fields generations and imageToImage share, and warnings for what neither can honour."""
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "prompt": call.prompt,
        "n": call.n,
        "response_format": "b64_json",
        **_options(call, warnings),
    }
    if call.output_format in IMAGE_FORMATS:
        body["image_format"] = call.output_format
    elif call.output_format:
        warnings.append(
            unsupported("output_format", f"{call.output_format!r} asked; Recraft answers png or webp")
        )
    if call.quality:
        warnings.append(unsupported("quality", f"{call.quality!r} asked; Recraft has no quality setting"))
    if call.style:
        warnings.append(
            unsupported(
                "style", f"{call.style!r} asked; use providerOptions.recraft.style for Recraft styles"
            )
        )
    warnings += ignored_fields(call, "Recraft", ("background", "moderation", "output_compression"))
    return body


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for POST /images/generations."""
    warnings: list[CallWarning] = []
    body = _common(call, warnings)
    body["size"] = str(call.size)
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


def _text(value: object) -> str:
    """A form field's text: numbers as JSON writes them (a whole strength 1 as "1", not "1.0")."""
    return repr(value).removesuffix(".0") if isinstance(value, float) else str(value)


def image_to_image_form(
    call: ImageCall, reference: ReferenceImage
) -> tuple[dict[str, str], tuple[str, bytes, str], list[CallWarning]]:
    """(text parts, the `image` file part, warnings) for POST /images/imageToImage."""
    extension = _check_reference(reference)
    warnings: list[CallWarning] = []
    body = _common(call, warnings)
    body.setdefault("strength", DEFAULT_STRENGTH)
    if (call.size.width, call.size.height) != (reference.width, reference.height):
        warnings.append(unsupported("size", f"{call.size} asked; Recraft image-to-image has no size setting"))
    fields = {name: _text(value) for name, value in body.items()}
    return fields, (f"reference.{extension}", reference.data, reference.media_type), warnings


class RecraftProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

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


PROVIDER = ProviderSpec(
    NAME,
    RecraftProvider.create,
    OPTIONS,
    credentials=("RECRAFT_API_KEY",),
    base_url_env="RECRAFT_BASE_URL",
    default_base_url="https://external.api.recraft.ai/v1",
    summary="Recraft external API (raster styles)",
)
