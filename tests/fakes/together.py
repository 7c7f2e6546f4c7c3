"""A fake of Together AI's images API, from Together's OpenAPI definition (schemas/together.json:
ImageRequest, ImageResponse, ErrorData) and its image docs: POST /v1/images/generations with Bearer
auth, the body validated closed against ImageRequest, `n` at most 4, `image_url` (a data: or http(s)
URL) only on the Kontext models, answers with {id, model, object: list, data: [{index, type,
b64_json | url}]} (`url` items point at this fake), errors in the OpenAI envelope.

Triggers (shared ones in tests/fakes/base.py): BLOCKME -> 422 "NSFW content was detected ..."
(Together's wording is unconfirmed; the adapter looks for the words); URLS -> the items come as `url`
whatever was asked; RATELIMIT(_ONCE) -> 429; FAILME -> 500; FLAKY -> 503 once; GARBAGE -> HTML 200;
EMPTY -> no items; SLOW -> answers after 1.5 s.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from tests.fakes.base import (
    SLOW_S,
    FakeProvider,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    jpeg,
    json_reply,
    png,
)

MODELS = {
    "black-forest-labs/FLUX.1-schnell",
    "black-forest-labs/FLUX.1-dev",
    "black-forest-labs/FLUX.1.1-pro",
    "black-forest-labs/FLUX.1-kontext-pro",
}
IMAGE_MODELS = frozenset({"black-forest-labs/FLUX.1-kontext-pro"})
IMAGES = {"jpeg": (jpeg, "image/jpeg"), "png": (png, "image/png")}


def error(message: str, status: int, type_: str = "invalid_request_error", code: str | None = None) -> Reply:
    return json_reply({"error": {"message": message, "type": type_, "param": None, "code": code}}, status)


class FakeTogether(FakeProvider):
    PROVIDER = "together"
    BASE_PATH = "/v1"
    SMOKE_MODEL = "together/black-forest-labs/FLUX.1-schnell"
    api_key = "tg-fake-key"

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/shrt/"):
            make, media_type = IMAGES[request.path.rsplit(".", 1)[-1]]
            return Reply(200, make(), {"content-type": media_type})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error("Invalid API key provided.", 401, "invalid_api_key", "invalid_api_key")
        if (request.method, request.path) != ("POST", "/v1/images/generations"):
            return error("Not found", 404)
        body = request.json
        try:
            check_body("together.json", "ImageRequest", body)
        except SchemaViolation as exc:
            return error(f"Input validation error: {exc}", 400)
        if body["model"] not in MODELS:
            return error(f"Unable to access model {body['model']}.", 404, code="model_not_available")
        if int(body.get("n", 1)) > 4:
            return error("Input validation error: `n` must be less than or equal to 4", 400)
        if "image_url" in body:
            if body["model"] not in IMAGE_MODELS:
                return error(f"Input validation error: {body['model']} does not take image_url", 400)
            if not str(body["image_url"]).startswith(("data:image/", "https://", "http://")):
                return error("Input validation error: image_url must be a URL or a data URL", 400)
        return self._answer(body)

    def _answer(self, body: dict[str, Any]) -> Reply:
        prompt = str(body["prompt"])
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error(
                "You have reached the rate limit specific to this model.", 429, "rate_limit_exceeded"
            )
        if "FAILME" in prompt:
            return error("Internal server error", 500, "server_error")
        if "FLAKY" in prompt and self.once(prompt):
            return error("The server is overloaded, please try again later.", 503, "service_unavailable")
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>gateway timeout</html>", {"content-type": "text/html"})
        if "BLOCKME" in prompt:
            return error("NSFW content was detected in the generated image. Try a different prompt.", 422)
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        fmt = body.get("output_format", "jpeg")
        make, _ = IMAGES[fmt]
        as_url = body.get("response_format", "url") == "url" or "URLS" in prompt
        count = 0 if "EMPTY" in prompt else int(body.get("n", 1))
        data = [
            {"index": index, "type": "url", "url": f"{self.url}/shrt/{uuid.uuid4().hex}.{fmt}"}
            if as_url
            else {"index": index, "type": "b64_json", "b64_json": base64.b64encode(make()).decode()}
            for index in range(count)
        ]
        return json_reply(
            {
                "id": f"oFuwv7Y-{uuid.uuid4().hex[:12]}-SJC",
                "model": body["model"],
                "object": "list",
                "data": data,
            }
        )
