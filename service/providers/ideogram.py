"""Ideogram API, Ideogram 3.0 (https://developer.ideogram.ai/api-reference): synchronous, multipart.

Auth is the `Api-Key: <key>` header (not Authorization). Three endpoints under the base URL, each
POSTed as multipart/form-data, each answering {created, data: [{url, prompt, resolution,
is_image_safe, seed, style_type}]} with up to `num_images` (1-8) images:
  /v1/ideogram-v3/generate  text to image;
  /v1/ideogram-v3/remix     with a reference image (the file part `image`; Ideogram crops it to the
                            asked size's aspect ratio) and the prompt;
  /v1/ideogram-v3/edit      an edit with a mask: the file parts `image` and `mask`. The gateway's
                            mask is OpenAI's (a PNG whose transparent pixels mark what to change);
                            Ideogram's is black and white, black where to change, so the mask's
                            alpha is sent as black (below half opaque) or white. An edit keeps the
                            input image's size and takes no size, style reference or negative prompt.
Input images must be JPEG, PNG or WebP of at most 10 MB (a GIF is sent as PNG of its first frame;
a larger file is a 400 naming reference_image before any call).

Sizes: every size the catalog offers is one of Ideogram 3.0's resolutions and goes out as
`resolution` exactly (never with `aspect_ratio`, which Ideogram refuses alongside it). n is
`num_images`. quality is `rendering_speed`: turbo / low -> TURBO; default / medium / standard / auto
(and no quality) -> DEFAULT; quality / high / hd -> QUALITY; the price follows it. style (vivid /
natural), background, moderation and output_compression have no Ideogram equivalent and are dropped
with a warning (Ideogram's own styles are providerOptions.ideogram.style_type).

Answers: the URLs are ephemeral and are downloaded (without the key). `prompt` is the prompt used,
rewritten when MagicPrompt ran: it is the image's revised_prompt when it differs from the caller's.
An image with `is_image_safe: false` has no URL: it is dropped with a warning (as fal's flagged
images are: the gateway charges only the images it returns), and when every image of the call is
unsafe the call is a refusal (400 CONTENT_POLICY_VIOLATION). A prompt Ideogram's safety check
rejects is a 422 `{"error": "... failed safety check ..."}`: a refusal too. Another 400/422 is the
provider rejecting the request (400 PROVIDER_REJECTED_REQUEST with its message); 401/403 are the
gateway's key (502); 429 and 5xx are retried within the deadline (upstream.py). Ideogram reports no
tokens and no request id.

providerOptions.ideogram (anything else is dropped with a warning):
  style_type       AUTO | GENERAL | REALISTIC | DESIGN | CUSTOM | FICTION | STYLIZED (any letter case)
  magic_prompt     AUTO | ON | OFF: whether Ideogram rewrites the prompt first
  negative_prompt  text of what to leave out (not on an edit: dropped with a warning)
  seed             integer 0-2147483647
  image_weight     remix only (a reference image without a mask): integer 1-100, how closely the
                   result follows the image (Ideogram's default 50)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from service.config import ProviderConfig
from service.errors import ContentPolicyViolation, InvalidSize
from service.generation.reference_images import ReferenceImage, refused
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
from service.providers.masks import BLACK, black_and_white, kept_size
from service.providers.options import OptionsSchema, integer, string
from service.providers.spec import ProviderSpec
from service.providers.upstream import data_items, malformed, provider_message

if TYPE_CHECKING:  # http.py loads aiohttp, which settings loading (the supervisor) must not
    from service.providers.http import FilePart

NAME = "ideogram"


def not_an_edit(call: ImageCall) -> str | None:
    return "an edit (a mask) does not take it" if call.mask is not None else None


def remix_only(call: ImageCall) -> str | None:
    if call.reference_image is None:
        return "it applies only with a reference_image"
    return not_an_edit(call)


OPTIONS = OptionsSchema(
    NAME,
    {
        "style_type": string(
            "AUTO", "GENERAL", "REALISTIC", "DESIGN", "CUSTOM", "FICTION", "STYLIZED", fold_case=True
        ),
        "magic_prompt": string("AUTO", "ON", "OFF", fold_case=True),
        "negative_prompt": string().where(not_an_edit),
        "seed": integer(0, 2_147_483_647),
        "image_weight": integer(1, 100).where(remix_only),
    },
)
# quality -> rendering_speed (the catalog offers these qualities and prices each tier).
RENDERING_SPEEDS = {
    "turbo": "TURBO",
    "low": "TURBO",
    "default": "DEFAULT",
    "medium": "DEFAULT",
    "standard": "DEFAULT",
    "auto": "DEFAULT",
    "quality": "QUALITY",
    "high": "QUALITY",
    "hd": "QUALITY",
}
# Ideogram 3.0's resolutions (ResolutionV3 in its OpenAPI document), "WxH".
RESOLUTIONS = frozenset({
    "512x1536", "576x1408", "576x1472", "576x1536", "640x1344", "640x1408", "640x1472", "640x1536",
    "704x1152", "704x1216", "704x1280", "704x1344", "704x1408", "704x1472", "736x1312", "768x1088",
    "768x1216", "768x1280", "768x1344", "800x1280", "832x960", "832x1024", "832x1088", "832x1152",
    "832x1216", "832x1248", "864x1152", "896x960", "896x1024", "896x1088", "896x1120", "896x1152",
    "960x832", "960x896", "960x1024", "960x1088", "1024x832", "1024x896", "1024x960", "1024x1024",
    "1088x768", "1088x832", "1088x896", "1088x960", "1120x896", "1152x704", "1152x832", "1152x864",
    "1152x896", "1216x704", "1216x768", "1216x832", "1248x832", "1280x704", "1280x768", "1280x800",
    "1312x736", "1344x640", "1344x704", "1344x768", "1408x576", "1408x640", "1408x704", "1472x576",
    "1472x640", "1472x704", "1536x512", "1536x576", "1536x640",
})  # fmt: skip
INPUT_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MAX_INPUT_BYTES = 10 * 1024 * 1024
SAFETY_WORDS = ("safety check", "prohibited content")


def is_refusal(status: int, body: Any, text: str) -> bool:
    """Ideogram's safety error: a 422 (or 400) `{"error": "... failed safety check ..."}`."""
    message = provider_message(body, text).lower()
    return status in (400, 422) and any(word in message for word in SAFETY_WORDS)


def _rendering_speed(call: ImageCall, warnings: list[CallWarning]) -> str:
    if call.quality is None:
        return "DEFAULT"
    speed = RENDERING_SPEEDS.get(call.quality.lower())
    if speed is None:
        warnings.append(
            adjusted("quality", f"{call.quality!r} has no Ideogram rendering speed; sent DEFAULT")
        )
        return "DEFAULT"
    return speed


def _resolution(call: ImageCall) -> str:
    resolution = str(call.size)
    if resolution not in RESOLUTIONS:
        raise InvalidSize(f"Size {resolution} is not an Ideogram 3.0 resolution.", param="size")
    return resolution


def request_fields(call: ImageCall) -> tuple[dict[str, str], list[CallWarning]]:
    """(the form's text parts, warnings) for generate, remix or edit, whichever the call goes to."""
    options, warnings = OPTIONS.parse(call)
    fields: dict[str, Any] = {
        "prompt": call.prompt,
        "num_images": call.n,
        "rendering_speed": _rendering_speed(call, warnings),
    }
    if call.mask is None:
        fields["resolution"] = _resolution(call)
    else:
        warnings += kept_size(call, "Ideogram")
    if call.output_format not in (None, "png"):
        warnings.append(unsupported("output_format", f"{call.output_format!r} asked; Ideogram answers PNG"))
    warnings += ignored_fields(call, "Ideogram", ("style", "background", "moderation", "output_compression"))
    fields.update(options)
    return {name: str(value) for name, value in fields.items()}, warnings


def _image_part(picture: ReferenceImage) -> FilePart:
    """The `image` file part: JPEG, PNG or WebP as it came (a GIF as PNG), at most 10 MB."""
    data, media_type = picture.in_formats(INPUT_TYPES)
    if len(data) > MAX_INPUT_BYTES:
        raise refused(f"Ideogram takes input images of at most 10 MB; this one is {len(data)} bytes.")
    return f"image.{INPUT_TYPES[media_type]}", data, media_type


def revised(item: dict[str, Any], prompt: str) -> str | None:
    """The prompt Ideogram used, when it is not the caller's own."""
    used = item.get("prompt")
    return used if isinstance(used, str) and used and used != prompt else None


class IdeogramProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        return {"Api-Key": config.api_key}

    async def generate(self, call: ImageCall) -> ImageCallResult:
        fields, warnings = request_fields(call)
        files: dict[str, FilePart] = {}
        endpoint = "generate"
        if call.reference_image is not None:
            endpoint = "remix" if call.mask is None else "edit"
            files["image"] = _image_part(call.reference_image)
        if call.mask is not None:
            # Ideogram's mask is black where to change (inpainting.py)
            files["mask"] = ("mask.png", await black_and_white(call.mask, BLACK), "image/png")
        payload, _ = await self._upstream.json_object(
            "POST", f"/v1/{call.upstream_model}/{endpoint}", call.deadline, data=fields, files=files
        )
        safe, unsafe = self._safe_items(payload)
        if unsafe and not safe:
            raise ContentPolicyViolation(f"{self.name}: every image failed Ideogram's safety check.")
        if unsafe:
            warnings.append(other("n", f"Ideogram's safety check removed {unsafe} image(s)"))
        files_got = await asyncio.gather(
            *(self._upstream.download(item["url"], call.deadline) for item in safe)
        )
        images = [
            GeneratedImage(data, media_type, revised(item, call.prompt))
            for item, (data, media_type) in zip(safe, files_got, strict=True)
        ]
        return ImageCallResult(images=images, warnings=warnings)

    def _safe_items(self, payload: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """(the image items that passed Ideogram's safety check, how many did not)."""
        safe, unsafe = [], 0
        for item in data_items(self.name, payload):
            if item.get("is_image_safe") is False:
                unsafe += 1
            elif isinstance(item.get("url"), str) and item["url"]:
                safe.append(item)
            else:
                raise malformed(self.name, "an image marked safe without a url")
        return safe, unsafe


PROVIDER = ProviderSpec(
    NAME,
    IdeogramProvider.create,
    OPTIONS,
    credentials=("IDEOGRAM_API_KEY",),
    base_url_env="IDEOGRAM_BASE_URL",
    default_base_url="https://api.ideogram.ai",
    summary="Ideogram API (3.0: generate, remix, edit)",
)
