"""Stability AI Stable Image v2beta: Ultra, Core and SD 3.5 (https://platform.stability.ai/docs/api-reference).

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
  grow_mask        number 0..100, inpaint only: pixels the mask grows by on every side, softening
                   its edge (Stability's default 5)
Other keys are dropped with a warning.

Reference images (image-to-image) go into the same multipart request as the file part `image`, with
`strength`; sd3 also gets `mode=image-to-image` and no `aspect_ratio` (text-to-image only), and ultra
gets no `aspect_ratio` either (ignored there): the output follows the input's shape, so a size of
another ratio gets a warning. The provider takes JPEG, PNG and WebP of at least 64 px a side (and at
most 16,384); a GIF is converted to PNG (first frame) first. stable-image-core has no image input: a
reference image for it is refused before calling (the catalog keeps reference_image false there).

Inpainting is the model `inpaint` (stability/inpaint, edits only): POST
{base}/v2beta/stable-image/edit/inpaint with the file parts `image` and `mask` and the fields prompt,
negative_prompt, seed, grow_mask, output_format (no aspect_ratio: the answer keeps the input's size;
another size asked gets a warning). Stability's mask is black and white, white where to change; the
gateway's (OpenAI's: transparent where to change) is converted by inpainting.py, and an edit sent
without a mask gets one made from the image's transparent pixels (Stability would otherwise read
the image's alpha itself; the gateway's rule is then the same whatever the provider). The input must
be 64 px a side at least and 4,096 to 9,437,184 pixels; another is refused before calling. The
answer is the generate endpoints' ({image, finish_reason, seed}), and its refusals are theirs (403
content_moderation, finish_reason CONTENT_FILTERED).
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

from service.config import ProviderConfig
from service.errors import BadRequest, ContentPolicyViolation, InvalidSize, ModelNotAllowed
from service.generation.reference_images import ReferenceImage
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    ignored_fields,
    unsupported,
)
from service.providers.masks import WHITE, kept_size, provider_mask
from service.providers.options import OptionsSchema, integer, number, string, with_reference
from service.providers.spec import ProviderSpec
from service.providers.upstream import decode_image, malformed

NAME = "stability"
GENERATE = "/v2beta/stable-image/generate"
INPAINT = "inpaint"  # the upstream model id of /edit/inpaint
INPAINT_PATH = "/v2beta/stable-image/edit/inpaint"
# upstream model id -> endpoint; any other id is an sd3-family model sent to /sd3 with `model=`.
ENDPOINTS = {"stable-image-ultra": "ultra", "stable-image-core": "core"}
SD3_PREFIX = "sd3"
ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
MAX_SEED = 4294967294
MAX_HEADER_CHARS = 256
REFUSAL_NAMES = frozenset({"content_moderation", "public_figure"})
DEFAULT_STRENGTH = 0.5  # gateway choice (stability.md section 4); the provider has no default
INPUT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
MIN_SIDE, MAX_SIDE = 64, 16384
INPAINT_PIXELS = (4096, 9_437_184)  # what /edit/inpaint's input image may hold


def _endpoint(model: str) -> str | None:
    """The generate endpoint of an upstream model id, or None if Stability has none for it."""
    return ENDPOINTS.get(model) or ("sd3" if model.startswith(SD3_PREFIX) else None)


def _sd3_only(call: ImageCall) -> str | None:
    return None if _endpoint(call.upstream_model) == "sd3" else f"{call.upstream_model} does not take it"


def _inpaint_only(call: ImageCall) -> str | None:
    return None if call.upstream_model == INPAINT else f"{call.upstream_model} does not take it"


def _not_inpaint(call: ImageCall) -> str | None:
    return "inpaint does not take it" if call.upstream_model == INPAINT else None


OPTIONS = OptionsSchema(
    NAME,
    {
        "negative_prompt": string(),
        "seed": integer(0, MAX_SEED),
        "style_preset": string().where(_not_inpaint),
        "cfg_scale": number().where(_sd3_only),  # 1-10, checked by Stability
        "strength": number(0, 1).where(with_reference, _not_inpaint),
        "grow_mask": number(0, 100).where(_inpaint_only),
    },
)


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
    raise InvalidSize(
        f"stability takes only the aspect ratios {', '.join(ASPECT_RATIOS)}; {call.size} is none of them.",
        param="size",
    )


def _seed(seed: int, first_index: int) -> str:
    """Call k of a fanned-out request sends seed+k (wrapping inside 1..MAX_SEED), so images differ."""
    if seed == 0:
        return "0"
    return str((seed - 1 + first_index) % MAX_SEED + 1)


def _image_to_image(
    call: ImageCall, endpoint: str, strength: float, form: dict[str, str], warnings: list[CallWarning]
) -> None:
    """The text fields of an image-to-image call (the file part is added by the caller)."""
    reference = call.reference_image
    assert reference is not None
    if endpoint == "core":
        raise ModelNotAllowed(f"{call.upstream_model} takes no reference image.", param="reference_image")
    if min(reference.width, reference.height) < MIN_SIDE or max(reference.width, reference.height) > MAX_SIDE:
        raise BadRequest(f"stability needs a reference image {MIN_SIDE} to {MAX_SIDE} px a side, not "
                         f"{reference.width}x{reference.height}.", param="reference_image")  # fmt: skip
    if endpoint == "sd3":
        form["mode"] = "image-to-image"
    form["strength"] = f"{strength:g}"
    if Fraction(reference.width, reference.height) != call.size.aspect_ratio:
        warnings.append(
            unsupported("size", f"{call.size} asked; image-to-image keeps the reference image's shape")
        )


def image_part(reference: ReferenceImage) -> tuple[str, bytes, str]:
    """(filename, bytes, media type) of the `image` file part; GIF (not taken upstream) becomes PNG."""
    data, media_type = reference.in_formats(INPUT_TYPES)
    return f"reference.{INPUT_TYPES[media_type]}", data, media_type


def _inpaint_input(call: ImageCall) -> None:
    """The input image /edit/inpaint takes, or a 400 before calling."""
    reference = call.reference_image
    if reference is None:
        raise ModelNotAllowed("stability inpaint edits an input image: send one to /v1/images/edits.",
                              param="image")  # fmt: skip
    width, height = reference.width, reference.height
    if min(width, height) < MIN_SIDE or not INPAINT_PIXELS[0] <= width * height <= INPAINT_PIXELS[1]:
        raise BadRequest(
            f"stability inpaint needs an image of at least {MIN_SIDE} px a side and {INPAINT_PIXELS[0]} "
            f"to {INPAINT_PIXELS[1]} pixels, not {width}x{height}.",
            param="image",
        )


def request_form(call: ImageCall) -> tuple[str, dict[str, str], list[CallWarning]]:
    """(path, form fields, warnings) for one generate or inpaint call (the file parts aside)."""
    model = call.upstream_model
    endpoint = INPAINT if model == INPAINT else _endpoint(model)
    if endpoint is None:
        raise BadRequest(f"stability has no generate endpoint for the model {model!r}.", param="model")
    options, warnings = OPTIONS.parse(call)
    form = {"prompt": call.prompt}
    if endpoint == "sd3":
        form["model"] = model
    if endpoint == INPAINT:
        _inpaint_input(call)
        warnings += kept_size(call, "Stability")
    elif call.reference_image is None:
        form["aspect_ratio"] = aspect_ratio(call)
    else:
        _image_to_image(call, endpoint, options.pop("strength", DEFAULT_STRENGTH), form, warnings)
    if call.output_format:
        if call.output_format not in OUTPUT_FORMATS:
            raise BadRequest(f"stability cannot return {call.output_format!r}.", param="output_format")
        form["output_format"] = call.output_format
    for key, value in options.items():
        if key == "seed":
            form[key] = _seed(value, call.first_index)
        elif key in ("cfg_scale", "grow_mask"):
            form[key] = f"{value:g}"
        else:
            form[key] = value
    if call.n > 1:
        warnings.append(
            unsupported("n", f"stability returns one image per call; {call.n - 1} of {call.n} not requested")
        )
    warnings += ignored_fields(call, "stability")
    return (INPAINT_PATH if endpoint == INPAINT else f"{GENERATE}/{endpoint}"), form, warnings


class StabilityProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        return {"Authorization": f"Bearer {config.api_key}", "Accept": "application/json"}

    async def generate(self, call: ImageCall) -> ImageCallResult:
        path, form, warnings = request_form(call)
        headers = {"stability-client-user-id": call.user[:MAX_HEADER_CHARS]} if call.user else {}
        files = {}
        if call.reference_image is not None:
            files["image"] = await asyncio.to_thread(image_part, call.reference_image)
        if call.upstream_model == INPAINT:
            files["mask"] = ("mask.png", await provider_mask(call, WHITE, self.name), "image/png")
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


PROVIDER = ProviderSpec(
    NAME,
    StabilityProvider.create,
    OPTIONS,
    credentials=("STABILITY_API_KEY",),
    base_url_env="STABILITY_BASE_URL",
    default_base_url="https://api.stability.ai",
    summary="Stability AI Stable Image (Ultra, Core, SD 3.5, inpaint)",
)
