"""A fake of the OpenAI Images API (generations), from shared/providers/openai.md and the official
OpenAPI definition: Bearer auth, per-model rules, b64 or URL answers, usage, and its error bodies."""

from __future__ import annotations

import base64
import time
from typing import Any

from tests.fakes.base import FakeProvider, Recorded, Reply, check_body, json_reply, png

GPT_SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}
DALLE_SIZES = {
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
}
GPT_QUALITIES = {"low", "medium", "high", "auto"}
DALLE_QUALITIES = {"dall-e-3": {"standard", "hd"}, "dall-e-2": {"standard"}}
GPT_ONLY = {"output_format", "output_compression", "background", "moderation", "stream", "partial_images"}


def error(message: str, status: int = 400, *, type_: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, **headers: str) -> Reply:  # fmt: skip
    return json_reply(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status, **headers
    )


class FakeOpenAI(FakeProvider):
    api_key = "sk-fake-openai"

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/files/"):
            return Reply(200, png(), {"content-type": "image/png"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error("Incorrect API key provided.", 401, code="invalid_api_key")
        if (request.method, request.path) != ("POST", "/v1/images/generations"):
            return error(f"Unknown request URL: {request.method} {request.path}", 404)
        body = request.json
        check_body("openai.json", "CreateImageRequest", body)
        return self._generate(body)

    def _generate(self, body: dict[str, Any]) -> Reply:
        model, prompt = body.get("model", "dall-e-2"), body["prompt"]
        gpt = model.startswith("gpt-image")
        if problem := (self._check_gpt(body) if gpt else self._check_dalle(model, body)):
            return problem
        if reply := self._trigger(prompt, gpt):
            return reply
        n = body.get("n", 1)
        if gpt:
            return json_reply(
                {
                    "created": int(time.time()),
                    "data": [{"b64_json": base64.b64encode(png()).decode()} for _ in range(n)],
                    "size": body.get("size", "1024x1024") if body.get("size") != "auto" else "1024x1024",
                    "quality": body.get("quality", "medium") if body.get("quality") != "auto" else "medium",
                    "output_format": body.get("output_format", "png"),
                    "usage": {
                        "input_tokens": 12,
                        "output_tokens": 4160 * n,
                        "total_tokens": 12 + 4160 * n,
                        "input_tokens_details": {"text_tokens": 12, "image_tokens": 0},
                    },
                },
                **{"x-request-id": "req_fake_123"},
            )
        item: dict[str, Any] = (
            {"b64_json": base64.b64encode(png()).decode()}
            if body.get("response_format") == "b64_json"
            else {"url": f"{self.url}/files/img-{len(self.requests)}.png"}
        )
        if model == "dall-e-3":
            item["revised_prompt"] = f"A detailed rendering of {prompt}"
        return json_reply({"created": int(time.time()), "data": [item] * n})

    def _check_gpt(self, body: dict[str, Any]) -> Reply | None:
        if "response_format" in body:
            return error(
                "Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter"
            )
        if "style" in body:
            return error("Unknown parameter: 'style'.", param="style", code="unknown_parameter")
        if body.get("size", "auto") not in GPT_SIZES and not body["model"].startswith("gpt-image-2"):
            return error(f"Invalid value: '{body['size']}'.", param="size", code="invalid_value")
        if body.get("quality", "auto") not in GPT_QUALITIES:
            return error(f"Invalid value: '{body['quality']}'.", param="quality", code="invalid_value")
        return None

    def _check_dalle(self, model: str, body: dict[str, Any]) -> Reply | None:
        if used := GPT_ONLY & set(body):
            return error(
                f"Unknown parameter: '{sorted(used)[0]}'.", param=sorted(used)[0], code="unknown_parameter"
            )
        if body.get("size", "1024x1024") not in DALLE_SIZES[model]:
            return error(f"'{body['size']}' is not one of {sorted(DALLE_SIZES[model])} - 'size'")
        if "quality" in body and body["quality"] not in DALLE_QUALITIES[model]:
            return error(f"Invalid quality '{body['quality']}'.", param="quality")
        if "style" in body and model != "dall-e-3":
            return error("style is only supported for dall-e-3.", param="style")
        if model == "dall-e-3" and body.get("n", 1) != 1:
            return error("You must provide n=1 for this model.", param="n")
        return None

    def _trigger(self, prompt: str, gpt: bool) -> Reply | None:
        if "BLOCKME" in prompt:
            if gpt:
                return error("Your request was rejected by the safety system. safety_violations=[violence].",
                             type_="image_generation_user_error", code="moderation_blocked")  # fmt: skip
            return error(
                "Your request was rejected as a result of our safety system.", code="content_policy_violation"
            )
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error("Rate limit reached for images per minute.", 429, type_="requests",
                         code="rate_limit_exceeded", **{"retry-after": "1"})  # fmt: skip
        if "FAILME" in prompt:
            return error("The server had an error while processing your request.", 500, type_="server_error")
        if "FLAKY" in prompt and self.once(prompt):
            return error("The engine is currently overloaded.", 503, type_="server_error")
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>upstream proxy error</html>", {"content-type": "text/html"})
        if "EMPTY" in prompt:
            return json_reply({"created": int(time.time()), "data": []})
        if "SLOW" in prompt:
            time.sleep(1.5)
        return None
