"""Amazon Bedrock: Amazon Nova Canvas, Titan Image Generator v2 and Stability models, via InvokeModel.

POST {endpoint}/model/{model id, URL-encoded}/invoke with a JSON body of the model family's own
shape, synchronous, base64 images in the answer. The endpoint is
https://bedrock-runtime.{region}.amazonaws.com (AWS_ENDPOINT_URL_BEDROCK_RUNTIME, the AWS SDKs'
variable, moves it; `{region}` in it is replaced).

Auth: AWS Signature Version 4 (service `bedrock`) over each request, made by botocore's signer
(installed with boto3 for S3 blob storage, and imported only when this provider is configured):
SigV4's canonical request has rules a hand-written signer gets subtly wrong (double-encoded paths,
header folding), and AWS's own implementation is the reference for them. The credentials are the
static keys the AWS SDKs read (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) when they
are set, else what botocore's default credential chain finds (a profile, a container or instance
role...), refreshed before they expire (aws_credentials.py). The region is AWS_REGION (else
AWS_DEFAULT_REGION, else us-east-1). The exact signed bytes are sent, to the path as signed (`%3A`
kept encoded).

Configured: with the static keys, or with any of ENABLED_BY set (AWS_PROFILE, the container
credential variables, AWS_WEB_IDENTITY_TOKEN_FILE): each names a source of AWS credentials the
chain reads. An instance role (IMDS) or the default profile's files have no variable of their own:
with only a region set (AWS_REGION or AWS_DEFAULT_REGION), the provider is on when botocore's chain
finds credentials, asked once when settings load (before any event loop; off EC2 that waits for
IMDS's one-second timeout, which AWS_EC2_METADATA_DISABLED=true skips). A region alone with nothing
behind it leaves Bedrock off rather than listing models every call to which would fail.

Bodies:
- amazon.* (Nova Canvas, Titan v2): taskType TEXT_IMAGE with textToImageParams {text, negativeText,
  style (Nova)}. With input images and no mask (a reference_image, an edit without a mask, a
  variation) IMAGE_VARIATION with imageVariationParams {images: [base64, up to 5], text (the prompt;
  none for a variation), negativeText, similarityStrength}. An edit with a mask is INPAINTING,
  inPaintingParams {image, maskImage, text, negativeText}, or with providerOptions.bedrock
  .outPaintingMode OUTPAINTING, outPaintingParams {..., outPaintingMode}: the output keeps the input's
  size, so the image and mask are first scaled to the asked (and priced) size, with a warning when
  that changes them. Their mask is black and white: black is what inpainting changes (white is
  kept), and outpainting changes the white area outside the black one, so the gateway's mask
  (transparent = change) becomes black-where-transparent for INPAINTING and white-where-transparent
  for OUTPAINTING (masks.py). Input pictures go as JPEG or RGB PNG: both refuse transparent pixels;
  a variation's input outside Nova's bounds (320-4096 a side, 4.19 MP, 1:4 to 4:1) is scaled to the
  asked size, with a warning.
  imageGenerationConfig {numberOfImages (1-5), width and height (not for in/outpainting), quality
  (hd/high -> premium, else standard), cfgScale, seed}. Answer {images: [base64], error}.
- stability.*: {prompt, aspect_ratio (the size's exact ratio), negative_prompt, seed, output_format},
  and for sd3.5 large `mode` text-to-image, or with a reference image mode image-to-image, image
  (base64), strength and no aspect_ratio (Ultra and Core take no image here). One image per call.
  Answer {seeds, finish_reasons, images}; a finish reason starting "Filter reason" is a refusal,
  any other non-null one a failure.

Refusals: a 400 ValidationException whose message says the content filters blocked the request or
its output; Nova's non-null `error` in a 200. ThrottlingException (429) and 5xx are retried
(upstream.py); the type name travels in `x-amzn-ErrorType`, the text in `message`.

providerOptions.bedrock:
  negativeText        string; amazon models (negative_prompt on stability models)
  style               a Nova Canvas style (PHOTOREALISM, ...); Nova Canvas text-to-image only
  cfgScale            number 1.1..10; amazon models
  similarityStrength  number 0.2..1; amazon models with input images and no mask
  outPaintingMode     DEFAULT | PRECISE; amazon models, an edit with a mask: outpaint instead of
                      inpaint; the mask's transparent area is still what changes
  strength            number 0..1; stability models with a reference image (default 0.5)
  seed                integer 0..858993459 (Nova's range, inside Titan's and Stability's); call k of a
                      fanned-out request sends seed+k so images differ
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
import pybase64

from service.catalog.sizes import Size
from service.config import ProviderConfig, Settings
from service.errors import ContentPolicyViolation, ModelNotAllowed, UpstreamError
from service.generation.reference_images import ReferenceImage
from service.providers.adapter import HttpAdapter
from service.providers.aws_credentials import AwsCredentials
from service.providers.base import (
    CallWarning,
    GeneratedImage,
    ImageCall,
    ImageCallResult,
    adjusted,
    ignored_fields,
    unsupported,
)
from service.providers.masks import BLACK, WHITE, black_and_white
from service.providers.options import (
    OptionsSchema,
    integer,
    models,
    number,
    string,
    with_reference,
    without_reference,
)
from service.providers.spec import ProviderSpec
from service.providers.stability import aspect_ratio
from service.providers.upstream import Upstream, decode_image, malformed

NAME = "bedrock"
SERVICE = "bedrock"
DEFAULT_REGION = "us-east-1"
REGION_SETTINGS = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENABLED_BY = (
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
NOVA_CANVAS = "amazon.nova-canvas-v1:0"
SD35_LARGE = "stability.sd3-5-large-v1:0"
HIGH_QUALITIES = frozenset({"hd", "high", "premium"})
MAX_SEED = 858_993_459
MIN_SIDE, MAX_SIDE, MAX_PIXELS = 320, 4096, 4_194_304  # Nova's bounds for input pictures
DEFAULT_STRENGTH = 0.5
INPUT_TYPES = ("image/png", "image/jpeg")
STABILITY_OUTPUTS = {"png": "png", "jpeg": "jpeg"}
NOVA_STYLES = ("3D_ANIMATED_FAMILY_FILM", "DESIGN_SKETCH", "FLAT_VECTOR_ILLUSTRATION",
               "GRAPHIC_NOVEL_ILLUSTRATION", "MAXIMALISM", "MIDCENTURY_RETRO", "PHOTOREALISM",
               "SOFT_DIGITAL_PAINTING")  # fmt: skip
FILTER_WORDS = ("content filters", "filters blocked")
TASK_PARAMS = {
    "TEXT_IMAGE": "textToImageParams",
    "IMAGE_VARIATION": "imageVariationParams",
    "INPAINTING": "inPaintingParams",
    "OUTPAINTING": "outPaintingParams",
}


def with_mask(call: ImageCall) -> str | None:
    return None if call.mask is not None else "it applies only to an edit with a mask"


def without_mask(call: ImageCall) -> str | None:
    return "an edit with a mask does not take it" if call.mask is not None else None


amazon = models("amazon.")
stability = models("stability.")
OPTIONS = OptionsSchema(
    NAME,
    {
        "negativeText": string().where(amazon),
        "negative_prompt": string().where(stability),
        "style": string(*NOVA_STYLES, fold_case=True).where(models(NOVA_CANVAS), without_reference),
        "cfgScale": number(1.1, 10).where(amazon),
        "similarityStrength": number(0.2, 1).where(amazon, with_reference, without_mask),
        "outPaintingMode": string("DEFAULT", "PRECISE", fold_case=True).where(amazon, with_mask),
        "strength": number(0, 1).where(stability, with_reference),
        "seed": integer(0, MAX_SEED),
    },
)


def _message(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    value = body.get("message", body.get("Message"))
    return value if isinstance(value, str) else ""


def is_refusal(status: int, body: Any, text: str) -> bool:
    """Bedrock's content filter: 400 ValidationException "...blocked by our content filters." (the
    prompt) or "...Our filters blocked the generated image(s)." (the output)."""
    message = _message(body).lower()
    return status == 400 and any(words in message for words in FILTER_WORDS)


def _seed(options: dict[str, Any], call: ImageCall) -> int | None:
    seed = options.get("seed")
    return None if seed is None else (seed + call.first_index) % (MAX_SEED + 1)


async def _image(call: ImageCall) -> str:
    """The reference image as base64 PNG or JPEG (a GIF or WebP becomes PNG)."""
    assert call.reference_image is not None
    data, _ = await asyncio.to_thread(call.reference_image.in_formats, INPUT_TYPES)
    return pybase64.b64encode(data).decode()


async def _opaque(picture: ReferenceImage, size: Size | None = None) -> str:
    """A picture as Nova and Titan take it, base64: JPEG as it is, anything else an RGB PNG (they
    refuse transparent pixels), scaled to `size` when given."""
    width, height = (size.width, size.height) if size else (picture.width, picture.height)
    if picture.media_type == "image/jpeg" and (width, height) == (picture.width, picture.height):
        return pybase64.b64encode(picture.data).decode()
    rgb = await picture.scaled_rgb(width, height)

    def encode() -> bytes:
        out = io.BytesIO()
        rgb.save(out, format="PNG")
        return out.getvalue()

    return pybase64.b64encode(await asyncio.to_thread(encode)).decode()


def within_limits(width: int, height: int) -> bool:
    """Nova's bounds for an input picture: 320 to 4096 a side, at most 4,194,304 pixels, 1:4 to 4:1."""
    return (
        min(width, height) >= MIN_SIDE
        and max(width, height) <= MAX_SIDE
        and width * height <= MAX_PIXELS
        and max(width, height) <= 4 * min(width, height)
    )


async def _variation_input(call: ImageCall, picture: ReferenceImage, warnings: list[CallWarning]) -> str:
    """An IMAGE_VARIATION input as it came when Nova's bounds hold it, else scaled to the asked size
    (a size Nova and Titan generate, so one they take), with a warning."""
    if within_limits(picture.width, picture.height):
        return await _opaque(picture)
    warnings.append(
        adjusted(
            "image",
            f"an input image of {picture.width}x{picture.height} is outside Bedrock's bounds "
            f"(320-4096 a side, 1:4 to 4:1); it was scaled to {call.size}",
        )
    )
    return await _opaque(picture, call.size)


def amazon_task(call: ImageCall, options: dict[str, Any]) -> str:
    """The taskType a call is: an edit with a mask INPAINTING (OUTPAINTING when the caller chose an
    outPaintingMode), any other input image IMAGE_VARIATION, else TEXT_IMAGE."""
    if call.mask is not None:
        return "OUTPAINTING" if "outPaintingMode" in options else "INPAINTING"
    return "TEXT_IMAGE" if call.reference_image is None else "IMAGE_VARIATION"


async def _masked_params(
    call: ImageCall, task: str, options: dict[str, Any], warnings: list[CallWarning]
) -> dict[str, Any]:
    """inPaintingParams / outPaintingParams: the first image and the mask, both scaled to the asked
    size (the output keeps the input's size, so the price asked is the price billed). The gateway's
    mask marks what to change by transparency; Nova and Titan take black and white, and what changes
    is black when inpainting but white (the area outside the mask) when outpainting."""
    assert call.reference_image is not None and call.mask is not None
    picture, size = call.reference_image, call.size
    if (picture.width, picture.height) != (size.width, size.height):
        warnings.append(
            adjusted("size", f"the input image was scaled from {picture.width}x{picture.height} to {size}")
        )
    change = BLACK if task == "INPAINTING" else WHITE
    mask = await black_and_white(call.mask, change, (size.width, size.height), "RGB")
    params: dict[str, Any] = {
        "image": await _opaque(picture, size),
        "maskImage": pybase64.b64encode(mask).decode(),
    }
    if call.prompt:
        params["text"] = call.prompt
    if task == "OUTPAINTING":
        params["outPaintingMode"] = options["outPaintingMode"]
    return params


async def amazon_body(
    call: ImageCall, options: dict[str, Any], warnings: list[CallWarning]
) -> dict[str, Any]:
    task = amazon_task(call, options)
    config: dict[str, Any] = {"numberOfImages": call.n}
    if task in ("TEXT_IMAGE", "IMAGE_VARIATION"):  # an in/outpainting keeps the input's size
        config.update(width=call.size.width, height=call.size.height)
    config["quality"] = "premium" if call.quality in HIGH_QUALITIES else "standard"
    if "cfgScale" in options:
        config["cfgScale"] = options["cfgScale"]
    if (seed := _seed(options, call)) is not None:
        config["seed"] = seed
    params: dict[str, Any] = {"text": call.prompt} if call.prompt else {}
    if task == "TEXT_IMAGE":
        if "style" in options:
            params["style"] = options["style"]
    elif task == "IMAGE_VARIATION":
        params["images"] = [await _variation_input(call, picture, warnings) for picture in call.input_images]
        if "similarityStrength" in options:
            params["similarityStrength"] = options["similarityStrength"]
    else:
        params = await _masked_params(call, task, options, warnings)
    if "negativeText" in options:
        params["negativeText"] = options["negativeText"]
    return {"taskType": task, TASK_PARAMS[task]: params, "imageGenerationConfig": config}


async def stability_body(
    call: ImageCall, options: dict[str, Any], warnings: list[CallWarning]
) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": call.prompt}
    if call.reference_image is None:
        body["aspect_ratio"] = aspect_ratio(call)
        if call.upstream_model == SD35_LARGE:
            body["mode"] = "text-to-image"
    elif call.upstream_model != SD35_LARGE:
        raise ModelNotAllowed(f"{call.upstream_model} takes no reference image.", param="reference_image")
    else:
        body.update(mode="image-to-image", image=await _image(call))
        body["strength"] = options.get("strength", DEFAULT_STRENGTH)
    if "negative_prompt" in options:
        body["negative_prompt"] = options["negative_prompt"]
    if (seed := _seed(options, call)) is not None:
        body["seed"] = seed
    if call.output_format in STABILITY_OUTPUTS:
        body["output_format"] = STABILITY_OUTPUTS[call.output_format]
    elif call.output_format:
        warnings.append(unsupported("output_format", f"{call.upstream_model} answers png or jpeg"))
    if call.quality:
        warnings.append(unsupported("quality", f"{call.upstream_model} has no quality setting"))
    return body


class BedrockProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    def __init__(self, upstream: Upstream, credentials: AwsCredentials, region: str) -> None:
        super().__init__(upstream)
        self._credentials = credentials
        self._region = region

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> BedrockProvider:
        located = region(config.settings)
        regional = dataclasses.replace(config, base_url=config.base_url.replace("{region}", located))
        upstream = Upstream.from_config(regional, settings, {}, cls.is_refusal)
        return cls(upstream, AwsCredentials(NAME, config.credentials, config.settings, located), located)

    async def signed_headers(self, url: str, body: bytes) -> dict[str, str]:
        """The SigV4 headers (Authorization, X-Amz-Date, X-Amz-Security-Token) for this exact request,
        signed with the current credentials."""
        from botocore.auth import SigV4Auth  # only a worker that uses Bedrock loads botocore
        from botocore.awsrequest import AWSRequest

        credentials = await self._credentials.current()
        request = AWSRequest(
            "POST", url, data=body, headers={"Content-Type": "application/json", "Accept": "application/json"}
        )
        SigV4Auth(credentials, SERVICE, self._region).add_auth(request)
        return dict(request.headers.items())

    async def aclose(self) -> None:
        await self._credentials.aclose()
        await super().aclose()

    async def generate(self, call: ImageCall) -> ImageCallResult:
        model = call.upstream_model
        options, warnings = OPTIONS.parse(call)
        warnings += ignored_fields(call, NAME, ("style", "background", "moderation", "output_compression"))
        if model.startswith("stability."):
            body = await stability_body(call, options, warnings)
        else:
            body = await amazon_body(call, options, warnings)
        content = orjson.dumps(body)
        path = f"/model/{quote(model, safe='')}/invoke"
        payload, response = await self._upstream.json_object(
            "POST",
            path,
            call.deadline,
            content=content,
            encoded=True,
            headers=await self.signed_headers(self._upstream.url(path), content),
        )
        images = self._images(payload)
        return ImageCallResult(
            images, upstream_request_id=response.headers.get("x-amzn-RequestId"), warnings=warnings
        )

    def _images(self, payload: dict[str, Any]) -> list[GeneratedImage]:
        error = payload.get("error")
        if error:  # Nova / Titan: a 200 that carries the filter's verdict instead of images
            raise ContentPolicyViolation(f"{self.name}: {error}")
        reasons = [reason for reason in payload.get("finish_reasons") or [] if reason]
        if reasons:
            message = f"{self.name}: {'; '.join(map(str, reasons))}"
            if all(str(reason).startswith("Filter reason") for reason in reasons):
                raise ContentPolicyViolation(message)
            raise UpstreamError(message)
        items = payload.get("images")
        if not isinstance(items, list):
            raise malformed(self.name, "no list of images under `images`")
        return [GeneratedImage(*decode_image(self.name, item)) for item in items]


def region(settings: Mapping[str, object]) -> str:
    return next((str(settings[n]) for n in REGION_SETTINGS if settings.get(n)), DEFAULT_REGION)


def credentials_found(environ: Mapping[str, str]) -> bool:
    """A region and no other AWS variable: on if AWS's credential chain finds credentials anyway
    (an instance role, or the default profile's files)."""
    from service.providers.aws_credentials import chain_finds_credentials

    return chain_finds_credentials(region(environ))


PROVIDER = ProviderSpec(
    NAME,
    BedrockProvider.create,
    OPTIONS,
    credentials=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    base_url_env="AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    default_base_url="https://bedrock-runtime.{region}.amazonaws.com",
    summary="Amazon Bedrock InvokeModel (Nova Canvas, Titan Image v2, Stability)",
    settings=("AWS_SESSION_TOKEN", *REGION_SETTINGS),
    enabled_by=ENABLED_BY,
    probe_by=REGION_SETTINGS,
    probe=credentials_found,
)
