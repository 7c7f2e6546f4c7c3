"""OpenAI Images API: GPT image models (gpt-image-*) and DALL-E 2/3 (https://platform.openai.com/docs/api-reference/images).

POST {base}/images/generations (JSON), Bearer auth. GPT image models always answer base64 with token
usage; DALL-E is asked for base64 too, so no provider URL is ever needed. Quality words map across
families (standard -> medium, hd -> high for GPT image; the reverse for dall-e-3); style goes to
dall-e-3 only.

With a reference image the call goes to POST {base}/images/edits as multipart/form-data, the image
as the `image` file part (the official schema's name; the doc's curl shows `image[]`, which dall-e-2
refuses as "an array"); several input images (GPT image models, up to 16) go as repeated `image[]`
parts, and an edit's mask as the `mask` part. GPT image models take png/jpeg/webp, anything else
(GIF) is re-encoded as PNG; dall-e-2 takes a PNG with an alpha channel, so other images are
re-encoded as RGBA PNG (without a mask, dall-e-2 edits the transparent area; an opaque image needs
a mask). dall-e-3 has no edits (its catalog entry refuses reference images). The edit form has no
`moderation` field, so it is dropped with a warning. The answer is parsed as for generations.

A variation (dall-e-2) goes to POST {base}/images/variations: the `image` part (a square PNG, as for
dall-e-2 edits), `model`, `n`, `size`, `response_format=b64_json`, `user`; no prompt.

A streamed call (the caller asked for partial images) to a GPT image model, a generation or an edit
(its form then has `stream=true` and `partial_images` fields), is sent with `stream: true` and
`partial_images`: the answer is server-sent events (section 5; image_edit.* for edits), each partial
image handed to the caller as it arrives, the completed event (image and usage) the result. Other
models answer unstreamed; the caller then gets the completed event only.

providerOptions.openai (OPTIONS) may set background, moderation, output_format, output_compression
(GPT image models; they win over the request's fields of the same name), and for edits only:
input_fidelity ("high" | "low"; GPT image models except gpt-image-1-mini) and mask (base64 PNG or
data: URL, same size as the image; fully transparent pixels mark the area to change). Keys that do
not apply to the model or endpoint are dropped with a warning.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import Any

import orjson

from service.errors import ContentPolicyViolation, EditNotSupported, InvalidMask, MgError, UpstreamError
from service.generation.reference_images import ReferenceImage, png_with_alpha
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    PartialImage,
    ProviderUsage,
    unsupported,
)
from service.providers.media import sniff_media_type
from service.providers.options import OptionsSchema, Rule, integer, string, with_reference
from service.providers.spec import ProviderSpec
from service.providers.upstream import (
    data_items,
    decode_image,
    json_object_of,
    malformed,
    provider_message,
    revised_prompt,
)

NAME = "openai"
GPT_QUALITY = {"standard": "medium", "hd": "high"}
DALLE3_QUALITY = {"low": "standard", "medium": "standard", "high": "hd"}
GPT_OPTIONS = ("background", "moderation", "output_format", "output_compression")
REFUSAL_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def is_refusal(status: int, body: Any, text: str) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    return error.get("code") in REFUSAL_CODES or error.get("type") == "image_generation_user_error"


def _is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def _gpt_fields(model: str, edit: bool) -> tuple[str, ...]:
    """The optional GPT image fields this model takes on this endpoint."""
    if not _is_gpt_image(model):
        return ()
    if not edit:
        return GPT_OPTIONS
    fidelity = () if model.startswith("gpt-image-1-mini") else ("input_fidelity",)
    return ("background", "output_format", "output_compression", *fidelity)


def _not_taken(call: ImageCall) -> str:
    endpoint = "edits" if call.reference_image is not None else "generations"
    return f"{call.upstream_model} {endpoint} do not take it"


def _taken_here(name: str) -> Rule:
    """Applies where `_gpt_fields` says the model and endpoint take `name`."""

    def rule(call: ImageCall) -> str | None:
        taken = _gpt_fields(call.upstream_model, call.reference_image is not None)
        return None if name in taken else _not_taken(call)

    return rule


GPT_VALUES = {
    "background": string("transparent", "opaque", "auto"),
    "moderation": string("low", "auto"),
    "output_format": string("png", "jpeg", "webp"),
    "output_compression": integer(0, 100),
    "input_fidelity": string("high", "low"),
}
OPTIONS = OptionsSchema(
    NAME,
    {
        **{name: option.where(_taken_here(name)) for name, option in GPT_VALUES.items()},
        "mask": string().where(with_reference),  # a file part of the edit form, see edit_files
    },
)


def request_body(
    call: ImageCall, schema: OptionsSchema = OPTIONS
) -> tuple[dict[str, Any], list[CallWarning]]:
    """(fields, warnings): the JSON body for /images/generations or, with a reference image, the text
    fields of the /images/edits form (`edit_files` adds the image and mask parts). `schema`: the
    options as declared by the provider serving the OpenAI body (Azure declares the same keys)."""
    model = call.upstream_model
    options, warnings = schema.parse(call)
    body: dict[str, Any] = {"model": model, "prompt": call.prompt, "n": call.n, "size": str(call.size)}
    if call.user:
        body["user"] = call.user
    if _is_gpt_image(model):
        if call.quality:
            body["quality"] = GPT_QUALITY.get(call.quality, call.quality)
    else:
        body["response_format"] = "b64_json"
        if model == "dall-e-3":
            if call.quality:
                body["quality"] = DALLE3_QUALITY.get(call.quality, call.quality)
            if call.style:
                body["style"] = call.style
    taken = _gpt_fields(model, call.reference_image is not None)
    # DALL-E takes none of them; its catalog entries offer only png output, which it answers anyway
    for name in GPT_OPTIONS if _is_gpt_image(model) else ("background", "moderation"):
        value = getattr(call, name)
        if value is None or name in options:  # the option of the same name wins
            continue
        if name in taken:
            body[name] = value
        else:
            warnings.append(unsupported(name, _not_taken(call)))
    if call.input_fidelity is not None and "input_fidelity" not in options:  # an edit's own field
        if "input_fidelity" in taken:
            body["input_fidelity"] = call.input_fidelity
        else:
            warnings.append(unsupported("input_fidelity", _not_taken(call)))
    body.update({name: value for name, value in options.items() if name != "mask"})
    return body, warnings


def _image_part(model: str, reference: ReferenceImage) -> tuple[bytes, str]:
    """The reference image as this model's edits take it: GPT image models png/jpeg/webp as they are;
    dall-e-2 a PNG with transparency (it refuses others: "format must be in ['RGBA', 'LA', 'L']")."""
    if _is_gpt_image(model) and reference.media_type in EXTENSIONS:
        return reference.data, reference.media_type
    from PIL import Image  # on first use: a worker that never converts a reference is spared it

    with Image.open(io.BytesIO(reference.data)) as image:
        if image.format == "PNG" and image.mode in ("RGBA", "LA", "L"):
            return reference.data, "image/png"
    return png_with_alpha(reference.data), "image/png"


def _decode_mask(value: object, param: str) -> bytes:
    text = value.partition(",")[2] if isinstance(value, str) and value.startswith("data:") else value
    try:
        data = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        data = b""
    if sniff_media_type(data) != "image/png":
        raise InvalidMask("mask must be a base64 PNG image.", param=param)
    return data


FilePart = tuple[str, tuple[str, bytes, str]]


def edit_files(call: ImageCall, schema: OptionsSchema = OPTIONS) -> list[FilePart]:
    """The file parts of an /images/edits form: the input images (one `image`, or repeated `image[]`)
    and the optional mask (the edit's own, else the providerOptions mask)."""
    name = "image[]" if len(call.input_images) > 1 else "image"
    files: list[FilePart] = []
    for index, picture in enumerate(call.input_images):
        data, media_type = _image_part(call.upstream_model, picture)
        files.append((name, (f"image{index or ''}.{EXTENSIONS[media_type]}", data, media_type)))
    if call.mask is not None:
        files.append(("mask", ("mask.png", call.mask.data, "image/png")))
    elif (mask := call.options.get("mask")) is not None:
        files.append(("mask", ("mask.png", _decode_mask(mask, schema.param("mask")), "image/png")))
    return files


def variation_form(call: ImageCall) -> dict[str, str]:
    form = {
        "model": call.upstream_model,
        "n": str(call.n),
        "size": str(call.size),
        "response_format": "b64_json",
    }
    if call.user:
        form["user"] = call.user
    return form


def parse_usage(body: dict[str, Any]) -> ProviderUsage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    return ProviderUsage.reported(
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        input_image_tokens=details.get("image_tokens") if isinstance(details, dict) else None,
    )


class OpenAIProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        reference = call.reference_image
        if reference is not None and call.upstream_model == "dall-e-3":
            raise EditNotSupported("dall-e-3 does not support edits.", param="reference_image")
        if call.variation and reference is not None:
            return await self._vary(call, reference)
        body, warnings = request_body(call)
        streamed = call.on_partial is not None and _is_gpt_image(call.upstream_model)
        if streamed:
            body = {**body, "stream": True, "partial_images": call.partial_images}
        if reference is None:
            sent: dict[str, Any] = {"json": body}
            path = "/images/generations"
        else:
            form = {name: _form_value(value) for name, value in body.items()}
            files = await asyncio.to_thread(edit_files, call)  # re-encoding is CPU work
            sent = {"data": form, "files": files}
            path = "/images/edits"
        if streamed:
            return await self._streamed(call, path, sent, warnings)
        payload, response = await self._upstream.json_object("POST", path, call.deadline, **sent)
        return read_answer(self.name, payload, response.headers.get("x-request-id"), warnings)

    async def _vary(self, call: ImageCall, reference: ReferenceImage) -> ImageCallResult:
        _, warnings = OPTIONS.parse(call)
        data, media_type = await asyncio.to_thread(_image_part, call.upstream_model, reference)
        files = [("image", (f"image.{EXTENSIONS[media_type]}", data, media_type))]
        payload, response = await self._upstream.json_object(
            "POST", "/images/variations", call.deadline, data=variation_form(call), files=files
        )
        return read_answer(self.name, payload, response.headers.get("x-request-id"), warnings)

    async def _streamed(
        self, call: ImageCall, path: str, sent: dict[str, Any], warnings: list[CallWarning]
    ) -> ImageCallResult:
        """A GPT image generation or edit asked with `stream: true`: its partial images go to the
        caller as they arrive, and the completed event (image and usage) is the result."""
        events = _ImageEvents(self.name, call)
        response = await self._upstream.request("POST", path, call.deadline, on_event=events.take, **sent)
        request_id = response.headers.get("x-request-id")
        if events.failure is not None:
            raise events.failure
        if events.completed is None:
            if response.content:  # answered unstreamed after all
                return read_answer(self.name, json_object_of(self.name, response), request_id, warnings)
            raise malformed(self.name, "the event stream ended without a completed event")
        completed = {"data": [events.completed], "usage": events.completed.get("usage")}
        return read_answer(self.name, completed, request_id, warnings)


def _form_value(value: Any) -> str:
    """A request field as a text part of the edits form (booleans as JSON writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_answer(
    provider: str, payload: dict[str, Any], request_id: str | None, warnings: list[CallWarning]
) -> ImageCallResult:
    """The answer of any endpoint (same shape, on OpenAI and on Azure): base64 images, usage."""
    images = []
    for item in data_items(provider, payload):
        data, media_type = decode_image(provider, item.get("b64_json"))
        images.append(GeneratedImage(data, media_type, revised_prompt(item)))
    return ImageCallResult(
        images=images, usage=parse_usage(payload), upstream_request_id=request_id, warnings=warnings
    )


class _ImageEvents:
    """The events of a streamed generation as they arrive: partial images handed on at once, the
    completed event kept, the first failure kept (raised once the stream has ended)."""

    def __init__(self, provider: str, call: ImageCall) -> None:
        self._provider = provider
        self._call = call
        self._partials = 0
        self.completed: dict[str, Any] | None = None
        self.failure: MgError | None = None

    def take(self, event: str, data: bytes) -> None:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            self.failure = self.failure or malformed(
                self._provider, f"an event that is not JSON: {data[:200]!r}"
            )
            return
        kind = str(payload.get("type") or event)
        if "error" in payload or kind == "error":
            message = provider_message(payload, data.decode("utf-8", "replace"))
            refused = is_refusal(200, payload, "")
            self.failure = self.failure or (ContentPolicyViolation if refused else UpstreamError)(message)
        elif kind.endswith(".completed"):
            self.completed = payload
        elif kind.endswith(".partial_image") and self._call.on_partial is not None:
            try:
                image, media_type = decode_image(self._provider, payload.get("b64_json"))
            except MgError as error:
                self.failure = self.failure or error
                return
            index = payload.get("partial_image_index")
            self._call.on_partial(
                PartialImage(image, index if type(index) is int else self._partials, media_type)
            )
            self._partials += 1


PROVIDER = ProviderSpec(
    NAME,
    OpenAIProvider.create,
    OPTIONS,
    credentials=("OPENAI_API_KEY",),
    base_url_env="OPENAI_BASE_URL",
    default_base_url="https://api.openai.com/v1",
    summary="OpenAI Images API",
)
