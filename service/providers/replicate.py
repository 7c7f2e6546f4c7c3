"""Replicate predictions: create with `Prefer: wait`, poll `urls.get` until the prediction ends,
download its output files.

Auth is `Authorization: Bearer <REPLICATE_API_TOKEN>`. A model `owner/name` is created at POST
{base}/models/<owner>/<name>/predictions with {input}; a pinned version `owner/name:<version>` at POST
{base}/predictions with {version, input}. The create call carries `Prefer: wait=N` (N: the seconds
left before the call's deadline, 1-60), so a fast model answers with the finished prediction; one
still `starting` / `processing` is read again at `urls.get` every `poll_interval_s` until it is
`succeeded`, `failed` or `canceled`. `urls.get` and `urls.cancel` are used only on the base URL's
scheme and host, since the token travels with them (else {base}/predictions/<id>[/cancel]). A
prediction still running at `call.deadline` is a 504, and, like one whose wait ends any other way
before it ended (the gateway gave up on the call, an unusable answer), it is cancelled upstream
(POST urls.cancel) so that it stops costing money (jobs.py). The prediction id is the upstream
request id.

`output` is one file URL or a list of them (per model), always downloaded (they expire in about an
hour). A `failed` prediction whose error speaks of NSFW content or a safety check is a 400
CONTENT_POLICY_VIOLATION, any other failure, or `canceled`, a 502 with Replicate's error text. HTTP
errors (401, 402 out of credit, 404, 422 input validation, 429 with Retry-After) are mapped in
upstream.py.

Inputs per model (their Cog input schemas on replicate.com): the FLUX.1 models (flux-schnell,
flux-dev) take `aspect_ratio` (the size must match one exactly; the image is about one megapixel in
that ratio), `num_outputs` (n, up to 4) and `output_format` (webp, jpg, png: the request's jpeg is
sent as jpg); flux-1.1-pro takes `aspect_ratio: custom` with the exact width/height (256-1440,
multiples of 32), one image per prediction. flux-dev takes a reference image as `image` (a data:
URL; image-to-image, weighted by `prompt_strength`). quality, style, background, moderation and
output_compression have no equivalent and are dropped with a warning.

providerOptions.replicate: seed (int); num_inference_steps (int: 1-4 on schnell, 1-50 on dev),
go_fast (bool), megapixels ("1" or "0.25") and disable_safety_checker (bool) on the FLUX.1 models;
guidance (number 0-10) on flux-dev, prompt_strength (number 0-1) on flux-dev with a reference image;
output_quality (int 0-100) everywhere; safety_tolerance (int 1-6) and prompt_upsampling (bool) on
flux-1.1-pro.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from service.errors import ContentPolicyViolation, EditNotSupported, InvalidSize, UpstreamError
from service.providers.adapter import HttpAdapter
from service.providers.base import CallWarning, GeneratedImage, ImageCall, ImageCallResult, ignored_fields
from service.providers.jobs import Watch, cancelled_unless_ended, poll, read_job
from service.providers.options import BOOLEAN, OptionsSchema, integer, models, number, string, with_reference
from service.providers.request_fields import exact_ratio, offered_format
from service.providers.spec import ProviderSpec
from service.providers.upstream import malformed

NAME = "replicate"
FLUX_1 = models("black-forest-labs/flux-schnell", "black-forest-labs/flux-dev")
DEV = models("black-forest-labs/flux-dev")
PRO = models("black-forest-labs/flux-1.1-pro")
OPTIONS = OptionsSchema(
    NAME,
    {
        "seed": integer(0, 2**32 - 1),
        "num_inference_steps": integer(1, 50).where(FLUX_1),
        "go_fast": BOOLEAN.where(FLUX_1),
        "megapixels": string("1", "0.25").where(FLUX_1),
        "disable_safety_checker": BOOLEAN.where(FLUX_1),
        "guidance": number(0, 10).where(DEV),
        "prompt_strength": number(0, 1).where(DEV, with_reference),
        "output_quality": integer(0, 100),
        "safety_tolerance": integer(1, 6).where(PRO),
        "prompt_upsampling": BOOLEAN.where(PRO),
    },
)
ASPECT_RATIOS = ["21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21"]
CUSTOM_SIZE_MODELS = frozenset({"black-forest-labs/flux-1.1-pro"})
MIN_SIDE, MAX_SIDE, MULTIPLE = 256, 1440, 32
IMAGE_INPUTS = {"black-forest-labs/flux-dev": "image"}
OUTPUT_FORMATS = {"webp": "webp", "jpeg": "jpg", "png": "png"}
RUNNING = frozenset({"starting", "processing"})
REFUSAL_WORDS = ("nsfw", "safety", "sensitive", "flagged")
MAX_WAIT_S = 60


def _size_fields(call: ImageCall) -> dict[str, Any]:
    size, model = call.size, call.upstream_model.partition(":")[0]
    if model in CUSTOM_SIZE_MODELS:
        sides = (size.width, size.height)
        if any(not MIN_SIDE <= side <= MAX_SIDE or side % MULTIPLE for side in sides):
            raise InvalidSize(
                f"Size {size} is not valid for {model}: "
                f"sides {MIN_SIDE}-{MAX_SIDE}, multiples of {MULTIPLE}.",
                param="size",
            )
        return {"aspect_ratio": "custom", "width": size.width, "height": size.height}
    return {"aspect_ratio": exact_ratio(call, ASPECT_RATIOS), "num_outputs": call.n}


def _image_fields(call: ImageCall) -> dict[str, str]:
    reference, model = call.reference_image, call.upstream_model.partition(":")[0]
    if reference is None:
        return {}
    if model not in IMAGE_INPUTS:
        raise EditNotSupported(f"{model} cannot take a reference_image.", param="reference_image")
    data, media_type = reference.in_formats(("image/png", "image/jpeg", "image/webp"))
    return {IMAGE_INPUTS[model]: f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"}


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[CallWarning]]:
    """(JSON body, warnings) for the create call: {input} or, for a pinned version, {version, input}."""
    options, warnings = OPTIONS.parse(call)
    model_input: dict[str, Any] = {"prompt": call.prompt, **_size_fields(call), **_image_fields(call)}
    if output_format := offered_format(call, OUTPUT_FORMATS):
        model_input["output_format"] = OUTPUT_FORMATS[output_format]
    warnings += ignored_fields(call, "Replicate")
    model_input.update(options)
    _, _, version = call.upstream_model.partition(":")
    return ({"version": version, "input": model_input} if version else {"input": model_input}), warnings


def create_path(upstream_model: str) -> str:
    model, _, version = upstream_model.partition(":")
    return "/predictions" if version else f"/models/{model}/predictions"


def _failure(prediction_id: str, status: str, error: object) -> Exception:
    text = str(error) if error else "no error given"
    if status == "failed" and any(word in text.lower() for word in REFUSAL_WORDS):
        return ContentPolicyViolation(f"{NAME}: {text}")
    return UpstreamError(f"{NAME}: prediction {prediction_id} {status}: {text}")


class ReplicateProvider(HttpAdapter):
    poll_interval_s = 1.0

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        wait = max(1, min(MAX_WAIT_S, int(call.deadline - time.monotonic())))
        prediction, _ = await self._upstream.json_object(
            "POST",
            create_path(call.upstream_model),
            call.deadline,
            json=body,
            headers={"Prefer": f"wait={wait}"},
        )
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise malformed(self.name, f"no prediction id in {str(prediction)[:200]!r}")
        call.report_job(prediction_id)
        urls: dict[str, Any] = prediction["urls"] if isinstance(prediction.get("urls"), dict) else {}
        get_url = self._upstream.on_base_host(urls.get("get"), f"/predictions/{prediction_id}")
        cancel_url = self._upstream.on_base_host(urls.get("cancel"), f"/predictions/{prediction_id}/cancel")

        async def cancel(deadline: float) -> None:
            await self._upstream.request("POST", cancel_url, deadline)

        async with cancelled_unless_ended(self.name, prediction_id, cancel) as watch:
            ended = self._ended(prediction, watch)
            if ended is None:
                ended = await poll(
                    lambda: self._read(get_url, watch, call.deadline),
                    call.deadline,
                    self.poll_interval_s,
                    lambda: (
                        f"{self.name}: prediction {prediction_id} was still {watch.state} at the deadline."
                    ),
                )
        if ended.get("status") != "succeeded":
            raise _failure(prediction_id, str(ended.get("status")), ended.get("error"))
        output = ended.get("output")
        listed = output if isinstance(output, list) else [output]
        files = [url for url in listed if isinstance(url, str) and url]
        if len(files) != len(listed):
            raise malformed(self.name, f"prediction {prediction_id} succeeded without file URLs")
        fetched = await asyncio.gather(*(self._upstream.image(url, call.deadline) for url in files))
        images = [GeneratedImage(data, media_type) for data, media_type in fetched]
        return ImageCallResult(images=images, upstream_request_id=prediction_id, warnings=warnings)

    def _ended(self, prediction: dict[str, Any], watch: Watch) -> dict[str, Any] | None:
        """The prediction if it has ended, None while it runs."""
        watch.state = status = prediction.get("status")
        if status in RUNNING:
            return None
        if status in ("succeeded", "failed", "canceled", "aborted"):
            watch.ended = True
            return prediction
        raise malformed(self.name, f"prediction {watch.job} has status {str(status)[:50]!r}")

    async def _read(self, get_url: str, watch: Watch, deadline: float) -> dict[str, Any] | None:
        return self._ended(await read_job(self._upstream, "GET", get_url, deadline, watch.job), watch)


PROVIDER = ProviderSpec(
    NAME,
    ReplicateProvider.create,
    OPTIONS,
    credentials=("REPLICATE_API_TOKEN",),
    base_url_env="REPLICATE_BASE_URL",
    default_base_url="https://api.replicate.com/v1",
    summary="Replicate predictions (Prefer: wait, then polling)",
)
