"""Fireworks AI's FLUX workflows: synchronous text_to_image for FLUX.1, submit-and-poll for Kontext.

Bearer auth; model ids are Fireworks' own (accounts/fireworks/models/<name>), and every route hangs
off {base}/workflows/<model id>:
- FLUX.1 [schnell] / [dev] FP8: POST .../text_to_image with {prompt, aspect_ratio, ...} and
  `Accept: application/json`, answering {id, base64, finishReason, seed} for one image (`base64` is
  the image, as a data: URL or bare, or a list of them). finishReason CONTENT_FILTERED is a content
  refusal; anything other than SUCCESS an upstream error.
- FLUX.1 Kontext [pro] / [max]: POST ... with BFL's Kontext input ({prompt, input_image,
  aspect_ratio, output_format, ...}) answers {request_id}; the adapter POSTs .../get_result with
  {"id": request_id} every `poll_interval_s` until the BFL-style status is final: `Ready` (download
  result.sample, a short-lived URL, without the key), `Request Moderated` / `Content Moderated`
  (a content refusal), `Error` / `Failed` / `Task not found` (an upstream error). A job still
  pending at `call.deadline` is a 504. Fireworks documents no way to cancel a Kontext job, so one
  the gateway gives up on runs to its end; the pipeline charges it at its bound. The request id (or
  the text_to_image answer's id) is the upstream request id.
One image per call either way (n is fanned out by fanout.py).

Sizes: only an `aspect_ratio` (21:9 ... 9:21), which the size must match exactly; the workflow picks
the pixels (about one megapixel). quality, style, background, moderation and output_compression have
no equivalent and are dropped with a warning; output_format (jpeg/png) goes to Kontext, and is
dropped with a warning on the FLUX.1 workflows (they answer PNG).
Reference images: Kontext only, as `input_image` (base64 of a PNG, JPEG or WebP).

providerOptions.fireworks: seed (int); guidance_scale (number 0-20) and num_inference_steps (int, at
most 4 on schnell and 28 on dev: Fireworks bills these per step, and the catalog's price is for that
many) on the FLUX.1 workflows; safety_tolerance (int 0-6) and prompt_upsampling (bool) on Kontext.
"""

from __future__ import annotations

import base64
from typing import Any

from service.errors import (
    BadRequest,
    ContentPolicyViolation,
    EditNotSupported,
    UpstreamError,
)
from service.providers.adapter import HttpAdapter
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    ignored_fields,
    unsupported,
)
from service.providers.jobs import Watch, poll, read_job
from service.providers.options import BOOLEAN, OptionsSchema, integer, models, number
from service.providers.request_fields import exact_ratio, offered_format
from service.providers.spec import ProviderSpec
from service.providers.upstream import decode_image, malformed

NAME = "fireworks"
PREFIX = "accounts/fireworks/models/"
# FLUX.1 workflow -> the most num_inference_steps the catalog's price covers
STEP_LIMITS = {f"{PREFIX}flux-1-schnell-fp8": 4, f"{PREFIX}flux-1-dev-fp8": 28}
KONTEXT = frozenset({f"{PREFIX}flux-kontext-pro", f"{PREFIX}flux-kontext-max"})
FLUX_1 = models(*STEP_LIMITS)
OPTIONS = OptionsSchema(
    NAME,
    {
        "seed": integer(0, 2**32 - 1),
        "guidance_scale": number(0, 20).where(FLUX_1),
        "num_inference_steps": integer(1, max(STEP_LIMITS.values())).where(FLUX_1),
        "safety_tolerance": integer(0, 6).where(models(*KONTEXT)),
        "prompt_upsampling": BOOLEAN.where(models(*KONTEXT)),
    },
)
ASPECT_RATIOS = ["21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21"]
OUTPUT_FORMATS = frozenset({"jpeg", "png"})
MODERATED = frozenset({"Request Moderated", "Content Moderated"})
FAILED = frozenset({"Error", "Failed", "Task not found"})


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for the model's workflow."""
    options, warnings = OPTIONS.parse(call)
    model = call.upstream_model
    body: dict[str, Any] = {"prompt": call.prompt, "aspect_ratio": exact_ratio(call, ASPECT_RATIOS)}
    if model in KONTEXT:
        if output_format := offered_format(call, OUTPUT_FORMATS):
            body["output_format"] = output_format
        if call.reference_image is not None:
            data, _ = call.reference_image.in_formats(("image/png", "image/jpeg", "image/webp"))
            body["input_image"] = base64.b64encode(data).decode("ascii")
    else:
        if call.reference_image is not None:
            raise EditNotSupported(f"{model} cannot take a reference_image.", param="reference_image")
        if call.output_format:
            warnings.append(unsupported("output_format", f"{model} answers PNG"))
        steps, limit = options.get("num_inference_steps"), STEP_LIMITS.get(model)
        if steps is not None and limit is not None and steps > limit:
            raise BadRequest(
                f"providerOptions.fireworks.num_inference_steps must be at most {limit} for {model}.",
                param="providerOptions.fireworks.num_inference_steps",
            )
    warnings += ignored_fields(call, "Fireworks")
    body.update(options)
    return body, warnings


class FireworksProvider(HttpAdapter):
    poll_interval_s = 1.0

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        made = self._kontext if call.upstream_model in KONTEXT else self._text_to_image
        image, request_id = await made(call, body)
        return ImageCallResult(images=[image], upstream_request_id=request_id, warnings=warnings)

    async def _text_to_image(
        self, call: ImageCall, body: dict[str, Any]
    ) -> tuple[GeneratedImage, str | None]:
        path = f"/workflows/{call.upstream_model}/text_to_image"
        answer, _ = await self._upstream.json_object(
            "POST", path, call.deadline, json=body, headers={"Accept": "application/json"}
        )
        reason = answer.get("finishReason")
        if reason == "CONTENT_FILTERED":
            raise ContentPolicyViolation(
                f"{self.name}: the image was filtered (finishReason CONTENT_FILTERED)."
            )
        if reason != "SUCCESS":
            raise UpstreamError(f"{self.name}: the image was not made (finishReason {str(reason)[:50]!r}).")
        encoded = answer.get("base64")
        if isinstance(encoded, list) and len(encoded) == 1:
            encoded = encoded[0]
        data, media_type = decode_image(self.name, encoded)
        request_id = answer.get("id")
        return GeneratedImage(data, media_type), request_id if isinstance(request_id, str) else None

    async def _kontext(self, call: ImageCall, body: dict[str, Any]) -> tuple[GeneratedImage, str | None]:
        path = f"/workflows/{call.upstream_model}"
        submitted, _ = await self._upstream.json_object("POST", path, call.deadline, json=body)
        request_id = submitted.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise malformed(self.name, f"no request_id in {str(submitted)[:200]!r}")
        call.report_job(request_id)
        watch = Watch(request_id, "Pending")
        sample = await poll(
            lambda: self._sample(f"{path}/get_result", watch, call.deadline),
            call.deadline,
            self.poll_interval_s,
            lambda: f"{self.name}: request {request_id} was still {watch.state} at the deadline.",
        )
        data, media_type = await self._upstream.image(sample, call.deadline)
        return GeneratedImage(data, media_type), request_id

    async def _sample(self, path: str, watch: Watch, deadline: float) -> str | None:
        """result.sample once the job is Ready; None while it is pending."""
        result = await read_job(self._upstream, "POST", path, deadline, watch.job, json={"id": watch.job})
        watch.state = status = result.get("status")
        details = f" {result['details']}" if result.get("details") else ""
        if status in MODERATED:
            raise ContentPolicyViolation(f"{self.name}: {status}{details}")
        if status in FAILED:
            raise UpstreamError(f"{self.name}: request {watch.job} ended with status {status!r}{details}")
        if status != "Ready":
            return None
        output = result.get("result")
        sample = output.get("sample") if isinstance(output, dict) else None
        if not isinstance(sample, str) or not sample:
            raise malformed(self.name, f"request {watch.job} is Ready without result.sample")
        return sample


PROVIDER = ProviderSpec(
    NAME,
    FireworksProvider.create,
    OPTIONS,
    credentials=("FIREWORKS_API_KEY",),
    base_url_env="FIREWORKS_BASE_URL",
    default_base_url="https://api.fireworks.ai/inference/v1",
    summary="Fireworks AI FLUX workflows (Kontext: submit + poll)",
)
