"""Black Forest Labs FLUX API (https://docs.bfl.ai): asynchronous, one image per task.

POST {base}/<model> with `x-key` auth creates a task and answers {id, polling_url, cost}; the adapter
polls `polling_url` (only when it is on the base URL's host or a *.bfl.ai / *.bfl.ml host, since the
key travels with it; otherwise {base}/get_result?id=) every `poll_interval_s` until `Ready`, then
downloads `result.sample` (a ~10-minute signed URL, fetched without the key). `Request Moderated` /
`Content Moderated` are content refusals, `Error` / `Failed` / `Task not found` upstream errors, and a
task still pending at `call.deadline` an upstream timeout.

Sizes: flux-pro-1.1 (and other width/height endpoints) get the exact width/height (256-1440,
multiples of 32); ultra and Kontext get `aspect_ratio`, looked up exactly from ASPECT_RATIOS.
quality, background, moderation and output_compression have no BFL equivalent and are dropped with
a warning; output_format (jpeg/png/webp) is passed through.
providerOptions.bfl: seed (int), safety_tolerance (int 0-6), prompt_upsampling (bool), raw (bool,
flux-pro-1.1-ultra only), image_prompt_strength (number 0-1, flux-pro-1.1-ultra with a reference image
only: how far the output follows the image prompt; BFL's default 0.1), steps and guidance (Fill
only, below). Other keys, and
image_prompt_strength without a reference image, are dropped with a warning. The submit `cost`
(credits, 1 = $0.01) has no place in ImageCallResult and is not returned; the task id is the upstream
request id.

Reference images (same endpoint, same JSON body, raw base64 without a data: prefix): Kontext takes
them as `input_image` (an instruction edit; an edit's further input images as input_image_2..4,
BFL's experimental multi-reference), flux-pro-1.1 and ultra as `image_prompt` (a Redux image
prompt: a remix / variation, not a pixel-preserving edit). Kontext still gets the requested size's
`aspect_ratio` (without it, it would follow the input's). GIFs are sent as PNG of their first frame
(BFL names no GIF support; unconfirmed either way).

FLUX.1 Fill [pro] (flux-pro-1.0-fill, edits only) inpaints: `image` and `mask` (base64 in the same
JSON body, the mask black and white, white where to change: inpainting.py converts the gateway's
mask, or makes one from the image's transparent pixels when the edit has none). It takes no size
(the answer keeps the input's; another size asked gets a warning) and two options of its own:
steps (integer 15-50, BFL's default 50) and guidance (number 1.5-100, default 60).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from service.config import ProviderConfig
from service.errors import BadRequest, ContentPolicyViolation, InvalidSize, UpstreamError, UpstreamTimeout
from service.providers.adapter import HttpAdapter
from service.providers.base import CallWarning, GeneratedImage, ImageCall, ImageCallResult, ignored_fields
from service.providers.jobs import read_job
from service.providers.masks import WHITE, kept_size, provider_mask
from service.providers.options import BOOLEAN, OptionsSchema, integer, models, number, with_reference
from service.providers.request_fields import exact_ratio, offered_format
from service.providers.spec import ProviderSpec
from service.providers.upstream import Upstream, malformed

NAME = "bfl"
ASPECT_RATIO_MODELS = frozenset({"flux-pro-1.1-ultra", "flux-kontext-pro", "flux-kontext-max"})
ASPECT_RATIOS = ["21:9", "16:9", "3:2", "4:3", "1:1", "3:4", "2:3", "9:16", "9:21"]
MIN_SIDE, MAX_SIDE, MULTIPLE = 256, 1440, 32
OUTPUT_FORMATS = frozenset({"jpeg", "png", "webp"})
ULTRA = models("flux-pro-1.1-ultra")
FILL_MODELS = frozenset({"flux-pro-1.0-fill"})
FILL = models(*FILL_MODELS)
OPTIONS = OptionsSchema(
    NAME,
    {
        "seed": integer(),
        "safety_tolerance": integer(),  # 0-6; BFL checks the range, and says so in its own words
        "prompt_upsampling": BOOLEAN,
        "raw": BOOLEAN.where(ULTRA),
        "image_prompt_strength": number().where(ULTRA, with_reference),  # 0-1, checked by BFL
        "steps": integer(15, 50).where(FILL),
        "guidance": number(1.5, 100).where(FILL),
    },
)
# endpoint -> the body field that carries the reference image (base64)
IMAGE_FIELDS = {
    "flux-kontext-pro": "input_image",
    "flux-kontext-max": "input_image",
    "flux-pro-1.1": "image_prompt",
    "flux-pro-1.1-ultra": "image_prompt",
    "flux-pro-1.0-fill": "image",
}
MODERATED = frozenset({"Request Moderated", "Content Moderated"})
FAILED = frozenset({"Error", "Failed", "Task not found"})
KEY_HOSTS = (".bfl.ai", ".bfl.ml")


def is_refusal(status: int, body: Any, text: str) -> bool:
    """BFL refuses content through poll states; an HTTP-level "moderated" detail is treated alike
    (not documented, kept defensive)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    return status in (400, 422) and isinstance(detail, str) and "moderat" in detail.lower()


def _size_fields(call: ImageCall) -> dict[str, Any]:
    size, model = call.size, call.upstream_model
    if model in ASPECT_RATIO_MODELS:
        return {"aspect_ratio": exact_ratio(call, ASPECT_RATIOS)}
    sides = (size.width, size.height)
    if any(not MIN_SIDE <= side <= MAX_SIDE or side % MULTIPLE for side in sides):
        raise InvalidSize(
            f"Size {size} is not valid for {model}: sides {MIN_SIDE}-{MAX_SIDE}, multiples of {MULTIPLE}.",
            param="size",
        )
    return {"width": size.width, "height": size.height}


def _image_field(call: ImageCall) -> dict[str, str]:
    """{field: base64} for the reference image (an edit's input images on Kontext: input_image,
    input_image_2, ...), or {} without one."""
    reference, model = call.reference_image, call.upstream_model
    if reference is None:
        return {}
    if model not in IMAGE_FIELDS:
        raise BadRequest(f"{model} cannot take a reference_image.", param="reference_image")
    first = IMAGE_FIELDS[model]
    pictures = call.input_images if first == "input_image" else (reference,)
    fields = {}
    for index, picture in enumerate(pictures):
        data, _ = picture.in_formats(("image/png", "image/jpeg", "image/webp"))
        fields[f"{first}_{index + 1}" if index else first] = base64.b64encode(data).decode("ascii")
    return fields


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for POST /<model>; a Fill call's mask is added by the adapter."""
    options, warnings = OPTIONS.parse(call)
    if call.upstream_model in FILL_MODELS:
        if call.reference_image is None:
            raise BadRequest(f"{call.upstream_model} inpaints an input image: send one.", param="image")
        size_fields: dict[str, Any] = {}
        warnings += kept_size(call, "BFL Fill")
    else:
        size_fields = _size_fields(call)
    body: dict[str, Any] = {"prompt": call.prompt, **size_fields, **_image_field(call)}
    if output_format := offered_format(call, OUTPUT_FORMATS):
        body["output_format"] = output_format
    warnings += ignored_fields(call, "BFL")
    body.update(options)
    return body, warnings


class BFLProvider(HttpAdapter):
    poll_interval_s = 0.5
    is_refusal = staticmethod(is_refusal)

    def __init__(self, upstream: Upstream) -> None:
        super().__init__(upstream)
        self._base = urlsplit(upstream.url(""))

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        return {"x-key": config.api_key, "accept": "application/json"}

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        if call.upstream_model in FILL_MODELS:
            mask = await provider_mask(call, WHITE, self.name)
            body["mask"] = base64.b64encode(mask).decode("ascii")
        tasks = [asyncio.ensure_future(self._one(call, body)) for _ in range(call.n)]
        try:
            outcomes = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return ImageCallResult(
            images=[image for image, _ in outcomes],
            upstream_request_id=",".join(task_id for _, task_id in outcomes),
            warnings=warnings,
        )

    async def _one(self, call: ImageCall, body: dict[str, Any]) -> tuple[GeneratedImage, str]:
        """Submit one task, poll it to a terminal state, download its image."""
        submitted = await self._upstream.json("POST", f"/{call.upstream_model}", call.deadline, json=body)
        task_id = submitted.get("id") if isinstance(submitted, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise malformed(self.name, f"no task id in {str(submitted)[:200]!r}")
        call.report_job(task_id)
        poll_url = self._poll_url(submitted.get("polling_url"), task_id)
        status: object = "Pending"
        while True:
            remaining = call.deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamTimeout(f"{self.name}: task {task_id} was still {status} at the deadline.")
            await asyncio.sleep(min(self.poll_interval_s, remaining))
            result = await self._poll(poll_url, task_id, call.deadline)
            status = result.get("status") or result.get("state")
            if not isinstance(status, str):
                raise malformed(self.name, f"a poll answer without status: {str(result)[:200]!r}")
            if status == "Ready":
                output = result.get("result")
                sample = output.get("sample") if isinstance(output, dict) else None
                if not isinstance(sample, str) or not sample:
                    raise malformed(self.name, f"task {task_id} is Ready without result.sample")
                data, media_type = await self._upstream.download(sample, call.deadline)
                return GeneratedImage(data, media_type), task_id
            reasons = f" {result['details']}" if result.get("details") else ""
            if status in MODERATED:
                raise ContentPolicyViolation(f"{self.name}: {status}{reasons}")
            if status in FAILED:
                raise UpstreamError(f"{self.name}: task {task_id} ended with status {status!r}{reasons}")

    def _poll_url(self, polling_url: object, task_id: str) -> str:
        """polling_url when the key may travel there, else the base host's get_result."""
        if isinstance(polling_url, str):
            url = urlsplit(polling_url)
            host = url.hostname or ""
            trusted = (url.scheme, url.netloc) == (self._base.scheme, self._base.netloc) or (
                url.scheme == "https" and host.endswith(KEY_HOSTS)
            )
            if trusted and parse_qs(url.query).get("id"):
                return polling_url
        return f"/get_result?id={task_id}"

    async def _poll(self, url: str, task_id: str, deadline: float) -> dict[str, Any]:
        return await read_job(self._upstream, "GET", url, deadline, task_id)


PROVIDER = ProviderSpec(
    NAME,
    BFLProvider.create,
    OPTIONS,
    credentials=("BFL_API_KEY",),
    base_url_env="BFL_BASE_URL",
    default_base_url="https://api.bfl.ai/v1",
    summary="Black Forest Labs FLUX API (submit + poll; Fill inpaints)",
)
