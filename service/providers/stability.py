"""Stability AI Stable Image v2beta: Ultra, Core and SD 3.5 (shared/providers/stability.md).

POST {base}/v2beta/stable-image/generate/{ultra|core|sd3} (sd3 also takes the form field `model`),
Bearer auth, multipart/form-data even though no file is sent, one image per call. The size becomes
`aspect_ratio` (exact match only; the catalog offers only sizes that map exactly) and the model picks
the pixel size. We send `Accept: application/json`: the answer is then a body the published schema
describes ({image, finish_reason, seed}) instead of bytes plus `finish-reason`/`seed` headers, so a
CONTENT_FILTERED result (a refusal inside a 200) and a truncated answer are told apart from the body
alone. A 403 `content_moderation` is the other refusal. `quality`, `style`, `background`,
`moderation` and `output_compression` have no equivalent and are dropped with a warning; `user` goes
to the `stability-client-user-id` header.

providerOptions.stability:
  negative_prompt  string (all models)
  seed             integer 1..4294967294; call k of a fanned-out request sends seed+k so images differ
                   (0 or absent: the provider picks a random seed)
  style_preset     e.g. "photographic", "anime" (all models; the provider checks the value)
  cfg_scale        number 1..10 (sd3 models only)
  strength         number 0..1, with a reference image only (ultra, sd3): how far to move away from
                   it (0 = the input, 1 = as if no image). The provider requires it with `image`; when
                   absent the gateway sends 0.5 (its own default, not the provider's).
Other keys (e.g. mask: /edit/inpaint is not wired) are dropped with a warning.

Reference images (image-to-image) go into the same multipart request as the file part `image`, with
`strength`; sd3 also gets `mode=image-to-image` and no `aspect_ratio` (text-to-image only), and ultra
gets no `aspect_ratio` either (ignored there): the output follows the input's shape, so a size of
another ratio gets a warning. The provider takes JPEG, PNG and WebP of at least 64 px a side (and at
most 16,384); a GIF is converted to PNG (first frame) first. stable-image-core has no image input: a
reference image for it is refused before calling (the catalog keeps reference_image false there).
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

from service.config import ProviderConfig, Settings
from service.errors import BadRequest, ContentPolicyViolation, ModelNotAllowed
from service.generation.reference_images import ReferenceImage
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult, ignored_fields
from service.providers.upstream import Upstream, decode_image, malformed

GENERATE = "/v2beta/stable-image/generate"
# upstream model id -> endpoint; any other id is an sd3-family model sent to /sd3 with `model=`.
ENDPOINTS = {"stable-image-ultra": "ultra", "stable-image-core": "core"}
SD3_PREFIX = "sd3"
ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
MAX_SEED = 4294967294
MAX_HEADER_CHARS = 256
REFUSAL_NAMES = frozenset({"content_moderation", "public_figure"})
COMMON_OPTIONS = ("negative_prompt", "seed", "style_preset")
SD3_OPTIONS = ("cfg_scale",)
DEFAULT_STRENGTH = 0.5  # gateway choice (stability.md section 4); the provider has no default
INPUT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
MIN_SIDE, MAX_SIDE = 64, 16384


def is_refusal(status: int, body: Any, text: str) -> bool:
    # 403 {"name": "content_moderation", ...}; `public_figure` (named in the spec's examples) also
    # refuses the prompt's content rather than its form.
    return isinstance(body, dict) and body.get("name") in REFUSAL_NAMES


def _ratio(label: str) -> Fraction:
    width, height = label.split(":")
    return Fraction(int(width), int(height))


def aspect_ratio(call: ImageCall) -> str:
    """The provider's label for exactly this size's ratio (21:9 is 7:3 once reduced)."""
    for label in ASPECT_RATIOS:
        if _ratio(label) == call.size.aspect_ratio:
            return label
    raise BadRequest(
        f"stability takes only the aspect ratios {', '.join(ASPECT_RATIOS)}; {call.size} is none of them.",
        param="size",
        code="INVALID_SIZE",
    )


def _option_error(key: str, expected: str) -> BadRequest:
    return BadRequest(
        f"providerOptions.stability.{key} must be {expected}.", param=f"providerOptions.stability.{key}"
    )


def _seed(value: object, first_index: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _option_error("seed", f"an integer from 0 to {MAX_SEED}")
    seed = int(value)
    if not 0 <= seed <= MAX_SEED:
        raise _option_error("seed", f"an integer from 0 to {MAX_SEED}")
    if seed == 0:
        return "0"
    return str((seed - 1 + first_index) % MAX_SEED + 1)


def _number(key: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _option_error(key, "a number")
    return f"{value:g}"


def _strength(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _option_error("strength", "a number from 0 to 1")
    return f"{value:g}"


def _image_to_image(call: ImageCall, endpoint: str, form: dict[str, str], warnings: list[str]) -> None:
    """The text fields of an image-to-image call (the file part is added by the caller)."""
    reference = call.reference_image
    assert reference is not None
    if endpoint == "core":
        raise ModelNotAllowed(f"{call.upstream_model} takes no reference image.",
                              param="reference_image", code="MODEL_NOT_ALLOWED")  # fmt: skip
    if min(reference.width, reference.height) < MIN_SIDE or max(reference.width, reference.height) > MAX_SIDE:
        raise BadRequest(f"stability needs a reference image {MIN_SIDE} to {MAX_SIDE} px a side, not "
                         f"{reference.width}x{reference.height}.", param="reference_image")  # fmt: skip
    if endpoint == "sd3":
        form["mode"] = "image-to-image"
    form["strength"] = _strength(call.options.get("strength", DEFAULT_STRENGTH))
    if Fraction(reference.width, reference.height) != call.size.aspect_ratio:
        warnings.append(f"size {call.size} ignored: image-to-image keeps the reference image's shape")


def image_part(reference: ReferenceImage) -> tuple[str, bytes, str]:
    """(filename, bytes, media type) of the `image` file part; GIF (not taken upstream) becomes PNG."""
    data, media_type = reference.in_formats(INPUT_TYPES)
    return f"reference.{INPUT_TYPES[media_type]}", data, media_type


def request_form(call: ImageCall) -> tuple[str, dict[str, str], list[str]]:
    """(path, form fields, warnings) for one generate call."""
    model = call.upstream_model
    warnings: list[str] = []
    endpoint = ENDPOINTS.get(model)
    if endpoint is None and not model.startswith(SD3_PREFIX):
        raise BadRequest(f"stability has no generate endpoint for the model {model!r}.", param="model")
    form = {"prompt": call.prompt}
    if endpoint is None:
        endpoint = "sd3"
        form["model"] = model
    if call.reference_image is None:
        form["aspect_ratio"] = aspect_ratio(call)
    else:
        _image_to_image(call, endpoint, form, warnings)
    if call.output_format:
        if call.output_format not in OUTPUT_FORMATS:
            raise BadRequest(f"stability cannot return {call.output_format!r}.", param="output_format")
        form["output_format"] = call.output_format
    allowed = COMMON_OPTIONS + (SD3_OPTIONS if endpoint == "sd3" else ())
    allowed += ("strength",) if call.reference_image is not None else ()
    for key, value in call.options.items():
        if key not in allowed or key == "strength":
            continue
        if key == "seed":
            form[key] = _seed(value, call.first_index)
        elif key == "cfg_scale":
            form[key] = _number(key, value)
        elif isinstance(value, str):
            form[key] = value
        else:
            raise _option_error(key, "a string")
    ignored = sorted(set(call.options) - set(allowed))
    if ignored:
        warnings.append(f"providerOptions.stability keys ignored for {model}: {', '.join(ignored)}")
    if call.n > 1:
        warnings.append(f"stability returns one image per call; {call.n - 1} of {call.n} not requested")
    warnings += ignored_fields(call, "stability")
    return f"{GENERATE}/{endpoint}", form, warnings


class StabilityProvider:
    name = "stability"

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> StabilityProvider:
        headers = {"Authorization": f"Bearer {config.api_key}", "Accept": "application/json"}
        return cls(Upstream.from_config(config, settings, headers, is_refusal))

    async def generate(self, call: ImageCall) -> ImageCallResult:
        path, form, warnings = request_form(call)
        headers = {"stability-client-user-id": call.user[:MAX_HEADER_CHARS]} if call.user else {}
        files = {}
        if call.reference_image is not None:
            files["image"] = await asyncio.to_thread(image_part, call.reference_image)
        payload, response = await self._upstream.json_object(
            "POST", path, call.deadline, data=form, files=files, headers=headers
        )
        finish_reason = payload.get("finish_reason")
        if finish_reason == "CONTENT_FILTERED":
            raise ContentPolicyViolation(
                f"{self.name}: the generated image violated Stability's content moderation policy "
                "(finish_reason CONTENT_FILTERED)."
            )
        if finish_reason != "SUCCESS":
            raise malformed(self.name, f"finish_reason {finish_reason!r}")
        data, media_type = decode_image(self.name, payload.get("image"))
        return ImageCallResult(
            images=[GeneratedImage(data, media_type)],
            upstream_request_id=response.headers.get("x-request-id"),
            warnings=warnings,
        )

    async def aclose(self) -> None:
        await self._upstream.aclose()
