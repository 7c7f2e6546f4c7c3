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
Other keys (strength, image, mask: reference images are not wired yet) are dropped with a warning.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from service.config import ProviderConfig, Settings
from service.errors import BadRequest, ContentPolicyViolation
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


def request_form(call: ImageCall) -> tuple[str, dict[str, str], list[str]]:
    """(path, form fields, warnings) for one generate call."""
    model, warnings = call.upstream_model, []
    endpoint = ENDPOINTS.get(model)
    if endpoint is None and not model.startswith(SD3_PREFIX):
        raise BadRequest(f"stability has no generate endpoint for the model {model!r}.", param="model")
    form = {"prompt": call.prompt}
    if endpoint is None:
        endpoint = "sd3"
        form["model"] = model
    form["aspect_ratio"] = aspect_ratio(call)
    if call.output_format:
        if call.output_format not in OUTPUT_FORMATS:
            raise BadRequest(f"stability cannot return {call.output_format!r}.", param="output_format")
        form["output_format"] = call.output_format
    allowed = COMMON_OPTIONS + (SD3_OPTIONS if endpoint == "sd3" else ())
    for key, value in call.options.items():
        if key not in allowed:
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
        # Every field as a part without a filename: httpx then sends multipart/form-data, not a
        # urlencoded body, and the provider sees plain text fields.
        files = [(name, (None, value)) for name, value in form.items()]
        payload, response = await self._upstream.json_object(
            "POST", path, call.deadline, files=files, headers=headers
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
