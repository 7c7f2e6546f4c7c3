"""A fake Amazon Bedrock runtime: InvokeModel for Nova Canvas, Titan Image v2 and Stability models.

- POST /model/{model id, URL-encoded}/invoke, JSON in and out; an unknown model is 404
  ResourceNotFoundException.
- SigV4 is verified here, independently of botocore (which the adapter signs with): the canonical
  request is rebuilt from what arrived (the path encoded once more, the signed headers, the body's
  SHA-256), and the signature recomputed with the fake's secret, so a request whose path, body or
  headers changed after signing fails as on AWS (403 InvalidSignatureException). A wrong key id is
  403 UnrecognizedClientException, a scope of another region or service a 403 too.
- Bodies are checked against schemas/bedrock.json (transcribed from AWS's prose; nested objects
  closed, as Bedrock refuses extraneous keys), plus the rules the prose states: Nova sizes (multiples
  of 16, at most 4,194,304 pixels, 1:4 to 4:1), Titan's fixed sizes and 512-character text and no style.
  Per taskType: input pictures must be PNG or JPEG without transparent pixels, 320 to 4096 pixels a
  side, at most 4,194,304 pixels, 1:4 to 4:1 (Nova's bounds, held for Titan too); INPAINTING and
  OUTPAINTING take one image and exactly one of maskImage / maskPrompt, a maskImage being the image's
  size in pure black and white, and no width or height (the output keeps the input's size).
- Errors as Bedrock sends them: `x-amzn-ErrorType` and {"message"}. BLOCKME: 400 ValidationException
  from the content filters; BLOCKOUTPUT: a 200 whose Nova `error` / Stability finish reason says the
  output was filtered; RATELIMIT: 429 ThrottlingException (no Retry-After, as Bedrock).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from urllib.parse import quote, unquote

from PIL.Image import Image as PILImage

from tests.fakes.base import (
    SLOW_S,
    FakeProvider,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    decoded_picture,
    json_reply,
    png,
)

NOVA = "amazon.nova-canvas-v1:0"
TITAN = "amazon.titan-image-generator-v2:0"
SD35 = "stability.sd3-5-large-v1:0"
STABLE_IMAGE = {"stability.stable-image-ultra-v1:1", "stability.stable-image-core-v1:1"}
TITAN_SIZES = {(1024, 1024), (768, 768), (512, 512), (768, 1152), (384, 576), (1152, 768), (576, 384),
               (768, 1280), (384, 640), (1280, 768), (640, 384), (896, 1152), (448, 576), (1152, 896),
               (576, 448), (768, 1408), (384, 704), (1408, 768), (704, 384), (640, 1408), (320, 704),
               (1408, 640), (704, 320), (1152, 640), (1173, 640)}  # fmt: skip
AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/"
    r"aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
PATH = re.compile(r"^/model/([^/]+)/invoke$")
SKEW_S = 300


TASKS = {
    "TEXT_IMAGE": ("AmazonTextImageRequest", "textToImageParams"),
    "IMAGE_VARIATION": ("AmazonImageVariationRequest", "imageVariationParams"),
    "INPAINTING": ("AmazonInPaintingRequest", "inPaintingParams"),
    "OUTPAINTING": ("AmazonOutPaintingRequest", "outPaintingParams"),
}
BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def _within_bounds(width: int, height: int) -> bool:
    """Nova's bounds for input pictures (the sides need not be multiples of 16)."""
    return (
        min(width, height) >= 320
        and max(width, height) <= 4096
        and width * height <= 4_194_304
        and Fraction(1, 4) <= Fraction(width, height) <= 4
    )


def _transparent(picture: PILImage) -> bool:
    if picture.mode not in ("RGBA", "LA", "PA") and "transparency" not in picture.info:
        return False
    lowest, _ = picture.convert("RGBA").getchannel("A").getextrema()
    return isinstance(lowest, int) and lowest < 255


def aws_error(kind: str, message: str, status: int) -> Reply:
    return json_reply(
        {"message": message},
        status,
        **{"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class FakeBedrock(FakeProvider):
    PROVIDER = "bedrock"
    SMOKE_MODEL = "bedrock/amazon.nova-canvas-v1:0"
    # The access key id and the secret (the shared environment() gives every credential this value).
    api_key = "AKIDFAKEBEDROCKTEST"
    secret = "AKIDFAKEBEDROCKTEST"
    region = "us-east-1"
    session_token: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[PILImage] = []  # the input pictures of accepted amazon bodies
        self.masks: list[tuple[str, PILImage]] = []  # (taskType, mask) of accepted masks

    def reset(self) -> None:
        super().reset()
        self.inputs.clear()
        self.masks.clear()

    def handle(self, request: Recorded) -> Reply:
        if problem := self._check_signature(request):
            return problem
        route = PATH.match(request.path)
        if request.method != "POST" or route is None:
            return aws_error("UnknownOperationException", "Unknown operation", 404)
        model = unquote(route.group(1))
        if request.headers.get("content-type") != "application/json" or request.json is None:
            return aws_error(
                "ValidationException", "Malformed input request, please reformat your input.", 400
            )
        body = request.json
        try:
            if model in (NOVA, TITAN):
                return self._amazon(model, body)
            if model == SD35 or model in STABLE_IMAGE:
                return self._stability(model, body)
        except SchemaViolation as exc:
            return aws_error(
                "ValidationException", f"Malformed input request: {exc}, please reformat your input.", 400
            )
        return aws_error(
            "ResourceNotFoundException",
            f"Could not resolve the foundation model from the model identifier provided: {model}",
            404,
        )

    def _check_signature(self, request: Recorded) -> Reply | None:
        match = AUTH.match(request.headers.get("authorization", ""))
        if match is None:
            return aws_error("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
        if match["key"] != self.api_key:
            return aws_error(
                "UnrecognizedClientException", "The security token included in the request is invalid.", 403
            )
        if (match["region"], match["service"]) != (self.region, "bedrock"):
            return aws_error(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, "
                f"not '{match['region']}'; to the service 'bedrock'.",
                403,
            )
        signed = match["signed"].split(";")
        amz_date = request.headers.get("x-amz-date", "")
        required = {"host", "x-amz-date"} | ({"x-amz-security-token"} if self.session_token else set())
        if not required <= set(signed) or not amz_date.startswith(match["date"]):
            return aws_error(
                "IncompleteSignatureException", "Signed headers must include host and x-amz-date.", 403
            )
        if self.session_token and request.headers.get("x-amz-security-token") != self.session_token:
            return aws_error(
                "UnrecognizedClientException", "The security token included in the request is invalid.", 403
            )
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        if abs(time.time() - signed_at) > SKEW_S:
            return aws_error("InvalidSignatureException", "Signature expired.", 403)
        canonical = "\n".join(
            [
                request.method,
                quote(request.path, safe="/~"),  # the path as sent, encoded once more (non-S3 services)
                "",  # no query string
                "".join(f"{name}:{' '.join(request.headers.get(name, '').split())}\n" for name in signed),
                match["signed"],
                hashlib.sha256(request.body).hexdigest(),
            ]
        )
        scope = f"{match['date']}/{self.region}/bedrock/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = f"AWS4{self.secret}".encode()
        for part in (match["date"], self.region, "bedrock", "aws4_request"):
            key = _hmac(key, part)
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match["signature"]):
            return aws_error(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
                403,
            )
        return None

    def _amazon(self, model: str, body: dict[str, Any]) -> Reply:
        task = body.get("taskType")
        config = body.get("imageGenerationConfig", {})
        if task not in TASKS:
            return aws_error(
                "ValidationException", f"Malformed input request: taskType {task!r} is not supported.", 400
            )
        schema, key = TASKS[task]
        check_body("bedrock.json", schema, body)
        params = body[key]
        pictures = params.get("images") or [params.get("image")] if task != "TEXT_IMAGE" else []
        decoded = [decoded_picture(image) for image in pictures]
        if any(picture is None for picture in decoded):
            return aws_error("ValidationException", "Invalid image: only PNG and JPEG are supported.", 400)
        if any(_transparent(picture) for picture in decoded if picture is not None):
            return aws_error(
                "ValidationException", "Input image must not contain transparent or translucent pixels.", 400
            )
        if "maskImage" in params:
            if problem := self._mask(task, decoded[0], params["maskImage"]):
                return problem
            if "width" in config or "height" in config:  # the output keeps the input's size
                return aws_error(
                    "ValidationException",
                    "Malformed input request: extraneous key [width] is not permitted.",
                    400,
                )
            assert decoded[0] is not None
            width, height = decoded[0].size
        else:
            width, height = config.get("width", 1024), config.get("height", 1024)
        if any(not _within_bounds(*picture.size) for picture in decoded if picture is not None):
            return aws_error(
                "ValidationException",
                "Input image dimensions must be between 320 and 4096 pixels a side, at most 4,194,304 "
                "pixels, with an aspect ratio between 1:4 and 4:1.",
                400,
            )
        self.inputs += [picture for picture in decoded if picture is not None]
        if model == TITAN:
            if (width, height) not in TITAN_SIZES:
                return aws_error("ValidationException", "Malformed input request: Invalid image size.", 400)
            if "style" in params or len(params.get("text", "")) > 512:
                return aws_error(
                    "ValidationException",
                    "Malformed input request: extraneous key [style] is not "
                    "permitted, or text longer than 512 characters.",
                    400,
                )
        elif (
            width % 16
            or height % 16
            or width * height > 4_194_304
            or not (Fraction(1, 4) <= Fraction(width, height) <= Fraction(4))
        ):
            return aws_error(
                "ValidationException",
                "Malformed input request: width and height must be multiples "
                "of 16, at most 4.19 MP, with an aspect ratio between 1:4 and 4:1.",
                400,
            )
        prompt = params.get("text", "")
        if reply := self._trigger(prompt):
            return reply
        if "BLOCKOUTPUT" in prompt:
            return json_reply(
                {"images": [], "error": "The generated images have been blocked by our content filters."}
            )
        n = config.get("numberOfImages", 1)
        return json_reply(
            {"images": [base64.b64encode(png()).decode()] * n, "error": None},
            **{"x-amzn-RequestId": "bedrock-req-1"},
        )

    def _mask(self, task: str, image: PILImage | None, encoded: str) -> Reply | None:
        """A mask image the size of the image, of pure black and white only (black inside the mask)."""
        mask = decoded_picture(encoded)
        if mask is None or image is None or mask.size != image.size:
            return aws_error(
                "ValidationException", "Mask image must be a PNG or JPEG the size of the input image.", 400
            )
        if not {color for _, color in mask.convert("RGB").getcolors(1 << 16) or []} <= {BLACK, WHITE}:
            return aws_error(
                "ValidationException", "Mask image must contain only black and white pixels.", 400
            )
        self.masks.append((task, mask))
        return None

    def _stability(self, model: str, body: dict[str, Any]) -> Reply:
        if model == SD35:
            check_body("bedrock.json", "StabilitySD35Request", body)
            image_mode = body.get("mode") == "image-to-image"
            if image_mode != ("image" in body) or (image_mode and "aspect_ratio" in body):
                return aws_error(
                    "ValidationException",
                    "Malformed input request: image-to-image needs image and "
                    "strength and takes no aspect_ratio.",
                    400,
                )
        else:
            check_body("bedrock.json", "StableImageRequest", body)
        prompt = body["prompt"]
        if reply := self._trigger(prompt):
            return reply
        if "BLOCKOUTPUT" in prompt:
            return json_reply({"seeds": [7], "finish_reasons": ["Filter reason: output image"], "images": []})
        return json_reply(
            {
                "seeds": [body.get("seed", 7)],
                "finish_reasons": [None],
                "images": [base64.b64encode(png()).decode()],
            },
            **{"x-amzn-RequestId": "bedrock-req-2"},
        )

    def _trigger(self, prompt: str) -> Reply | None:
        if "BLOCKME" in prompt:
            return aws_error(
                "ValidationException", "This request has been blocked by our content filters.", 400
            )
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return aws_error(
                "ThrottlingException", "Too many requests, please wait before trying again.", 429
            )
        if "FAILME" in prompt:
            return aws_error("InternalServerException", "The server encountered an internal error.", 500)
        if "FLAKY" in prompt and self.once(prompt):
            return aws_error("ServiceUnavailableException", "Bedrock is unable to process your request.", 503)
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>gateway timeout</html>", {"content-type": "text/html"})
        if "EMPTY" in prompt:
            return json_reply({"images": [], "error": None})
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        return None
