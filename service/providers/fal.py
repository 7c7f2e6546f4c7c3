"""fal.ai through its queue API: submit, poll the status, fetch the result, download the images.

Auth is `Authorization: Key <FAL_KEY>` (the word Key, not Bearer). POST {base}/<app> (an app id such
as fal-ai/flux/dev, which has slashes of its own) with the app's JSON input answers {request_id,
status_url, response_url, cancel_url}. The adapter GETs status_url every `poll_interval_s` until
`COMPLETED` (IN_QUEUE and IN_PROGRESS are pending), then GETs response_url: the app's output
({images: [{url, ...}], has_nsfw_concepts: [...]}) or the error it ended with (a 422 `detail[]`, a
5xx `{detail, error_type}`). The three URLs are used only on the base URL's own scheme and host,
since the key travels with them; otherwise they are built from the base URL and the app's
owner/name (`{base}/<owner>/<name>/requests/<id>[/status|/cancel]`, fal's rule: no sub-path).
Everything runs inside the one synchronous call: a request still pending at `call.deadline` is a
504, and it is cancelled upstream (PUT cancel_url) so that fal drops it from its queue; so is a
request whose wait ends any other way before it completed (jobs.py). The request id is the upstream
request id.

Refusals: a 422 whose `detail[]` has an item of type `content_policy_violation` (on submit or on
the result) is a 400 CONTENT_POLICY_VIOLATION. Images the safety checker flagged
(`has_nsfw_concepts` / `nsfw_content_detected` true: fal returns them blank) are dropped with a
warning; when all are, the call is a refusal.

Sizes: width/height apps get `image_size: {width, height}` exactly as asked; the apps in
ASPECT_RATIO_APPS (FLUX1.1 [pro] ultra) get `aspect_ratio`, which must match the size exactly. n is
`num_images` (the catalog's per-call maximum keeps it within fal's 1-4). output_format jpeg/png is
passed through; quality, style, background, moderation and output_compression have no fal
equivalent and are dropped with a warning.
Reference images: ultra takes one as `image_url` (a data: URL; a Redux image prompt, weighted by
`image_prompt_strength`); the other apps here are text-to-image only.

providerOptions.fal: seed (int); num_inference_steps (int 1-50), guidance_scale (number 1-20),
enable_safety_checker (bool) and acceleration (none|regular|high) on the FLUX.1 apps
(fal-ai/flux/...); safety_tolerance ("1"-"6", 1 strictest) and enhance_prompt (bool) on FLUX1.1 [pro]
apps; raw (bool) on ultra, and image_prompt_strength (number 0-1) on ultra with a reference image.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from service.config import ProviderConfig
from service.errors import ContentPolicyViolation, EditNotSupported
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    ignored_fields,
    other,
)
from service.providers.jobs import Watch, cancelled_unless_ended, poll, read_job
from service.providers.options import BOOLEAN, OptionsSchema, integer, models, number, string, with_reference
from service.providers.request_fields import exact_ratio, offered_format
from service.providers.spec import ProviderSpec
from service.providers.upstream import malformed

NAME = "fal"
FLUX_1 = models("fal-ai/flux/")
FLUX_PRO = models("fal-ai/flux-pro/")
ULTRA = models("fal-ai/flux-pro/v1.1-ultra")
OPTIONS = OptionsSchema(
    NAME,
    {
        "seed": integer(0, 2**32 - 1),
        "num_inference_steps": integer(1, 50).where(FLUX_1),
        "guidance_scale": number(1, 20).where(FLUX_1),
        "enable_safety_checker": BOOLEAN.where(FLUX_1),
        "acceleration": string("none", "regular", "high").where(FLUX_1),
        "safety_tolerance": string("1", "2", "3", "4", "5", "6").where(FLUX_PRO),
        "enhance_prompt": BOOLEAN.where(FLUX_PRO),
        "raw": BOOLEAN.where(ULTRA),
        "image_prompt_strength": number(0, 1).where(ULTRA, with_reference),
    },
)
ASPECT_RATIO_APPS = frozenset({"fal-ai/flux-pro/v1.1-ultra"})
ASPECT_RATIOS = ["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]
REFERENCE_APPS = frozenset({"fal-ai/flux-pro/v1.1-ultra"})
OUTPUT_FORMATS = frozenset({"jpeg", "png"})
PENDING = frozenset({"IN_QUEUE", "IN_PROGRESS"})
NSFW_FLAGS = ("has_nsfw_concepts", "nsfw_content_detected")


def _detail_items(body: Any) -> list[dict[str, Any]]:
    detail = body.get("detail") if isinstance(body, dict) else None
    return [item for item in detail if isinstance(item, dict)] if isinstance(detail, list) else []


def is_refusal(status: int, body: Any, text: str) -> bool:
    """fal's model errors: a `detail[]` item of type content_policy_violation."""
    return status == 422 and any(
        item.get("type") == "content_policy_violation" for item in _detail_items(body)
    )


def _size_fields(call: ImageCall) -> dict[str, Any]:
    size, app = call.size, call.upstream_model
    if app not in ASPECT_RATIO_APPS:
        return {"image_size": {"width": size.width, "height": size.height}}
    return {"aspect_ratio": exact_ratio(call, ASPECT_RATIOS)}


def _reference_fields(call: ImageCall) -> dict[str, str]:
    reference = call.reference_image
    if reference is None:
        return {}
    if call.upstream_model not in REFERENCE_APPS:
        raise EditNotSupported(
            f"{call.upstream_model} cannot take a reference_image.", param="reference_image"
        )
    data, media_type = reference.in_formats(("image/png", "image/jpeg", "image/webp"))
    return {"image_url": f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"}


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON input, warnings) for POST /<app>."""
    options, warnings = OPTIONS.parse(call)
    body: dict[str, Any] = {
        "prompt": call.prompt,
        "num_images": call.n,
        **_size_fields(call),
        **_reference_fields(call),
    }
    if output_format := offered_format(call, OUTPUT_FORMATS):
        body["output_format"] = output_format
    warnings += ignored_fields(call, "fal")
    body.update(options)
    return body, warnings


def _unflagged(request_id: str, output: dict[str, Any]) -> tuple[list[str], list[CallWarning]]:
    """(the URLs of the images the safety checker passed, a warning for those it flagged)."""
    items = output.get("images")
    if items is None and isinstance(output.get("image"), dict):
        items = [output["image"]]
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("url"), str) for i in items
    ):
        raise malformed(NAME, f"request {request_id}: no list of images with urls in the result")
    flags: list[object] = next((output[n] for n in NSFW_FLAGS if isinstance(output.get(n), list)), [])
    flagged = [index for index, flag in enumerate(flags) if flag is True and index < len(items)]
    urls = [item["url"] for index, item in enumerate(items) if index not in flagged]
    if flagged and not urls:
        raise ContentPolicyViolation(
            f"{NAME}: the safety checker flagged every image of request {request_id}."
        )
    warnings = [other("n", f"fal's safety checker removed {len(flagged)} image(s)")] if flagged else []
    return urls, warnings


class FalProvider(HttpAdapter):
    poll_interval_s = 0.5
    is_refusal = staticmethod(is_refusal)

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        return {"Authorization": f"Key {config.api_key}"}

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        submitted, _ = await self._upstream.json_object(
            "POST", f"/{call.upstream_model}", call.deadline, json=body
        )
        request_id = submitted.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise malformed(self.name, f"no request_id in {str(submitted)[:200]!r}")
        call.report_job(request_id)
        root = f"/{'/'.join(call.upstream_model.split('/')[:2])}/requests/{request_id}"
        status_url = self._upstream.on_base_host(submitted.get("status_url"), f"{root}/status")
        response_url = self._upstream.on_base_host(submitted.get("response_url"), root)
        cancel_url = self._upstream.on_base_host(submitted.get("cancel_url"), f"{root}/cancel")

        async def cancel(deadline: float) -> None:
            await self._upstream.request("PUT", cancel_url, deadline)

        async with cancelled_unless_ended(self.name, request_id, cancel) as watch:
            watch.state = submitted.get("status") or "IN_QUEUE"
            await poll(
                lambda: self._completed(status_url, watch, call.deadline),
                call.deadline,
                self.poll_interval_s,
                lambda: f"{self.name}: request {request_id} was still {watch.state} at the deadline.",
            )
        output, _ = await self._upstream.json_object("GET", response_url, call.deadline)
        urls, flagged = _unflagged(request_id, output)
        files = await asyncio.gather(*(self._upstream.image(url, call.deadline) for url in urls))
        images = [GeneratedImage(data, media_type) for data, media_type in files]
        return ImageCallResult(images=images, upstream_request_id=request_id, warnings=warnings + flagged)

    async def _completed(self, status_url: str, watch: Watch, deadline: float) -> bool | None:
        """True once the request is COMPLETED; None while it is pending."""
        status = await read_job(self._upstream, "GET", status_url, deadline, watch.job)
        watch.state = state = status.get("status")
        if state == "COMPLETED":
            watch.ended = True
            return True
        if state in PENDING:
            return None
        raise malformed(self.name, f"request {watch.job} has status {str(state)[:50]!r}")


PROVIDER = ProviderSpec(
    NAME,
    FalProvider.create,
    OPTIONS,
    credentials=("FAL_KEY",),
    base_url_env="FAL_BASE_URL",
    default_base_url="https://queue.fal.run",
    summary="fal.ai queue API (submit + poll)",
)
