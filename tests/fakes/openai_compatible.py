"""A plain server with an OpenAI-shaped images API, as LocalAI or an in-house service would run one:
POST /v1/images/generations (JSON) and /v1/images/edits (multipart), checked against OpenAI's own
definitions (schemas/openai.json: CreateImageRequest, CreateImageEditRequest) with only the common
extensions (seed, negative_prompt, steps, guidance_scale) allowed beyond them, any model in `models`,
OpenAI's error envelope. A key is required only when `api_key` is set (not empty).

It has no `PROVIDER`: it fakes no built-in provider but whatever a config file points an
`openai-compatible` provider at (tests/providers/test_compatible.py, tests/e2e/test_compatible.py).

Triggers (as in tests/fakes/base.py): BLOCKME -> 400 content_policy_violation; FAILME -> 500;
FLAKY -> 503 once; URLS -> `url` items on this server; ELSEWHERE -> `url` items naming this server
by another host name (localhost), which the gateway must not fetch; GARBAGE -> HTML 200.
"""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

from tests.fakes.base import (
    SCHEMAS,
    FakeProvider,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    json_reply,
    png,
)
from tests.fakes.openai import error, form_parts, typed_form

EXTENSIONS = {"seed", "negative_prompt", "steps", "guidance_scale"}


class FakeCompatibleServer(FakeProvider):
    BASE_PATH = "/v1"
    api_key: str = ""
    models: ClassVar[frozenset[str]] = frozenset({"flux-dev", "sdxl"})

    def __init__(self) -> None:
        super().__init__()
        self.edited: list[bytes] = []

    def reset(self) -> None:
        super().reset()
        self.edited.clear()

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/files/"):
            return Reply(200, png(), {"content-type": "image/png"})
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error("Incorrect API key provided.", 401, code="invalid_api_key")
        try:
            if (request.method, request.path) == ("POST", "/v1/images/generations"):
                body = request.json
                self._check("CreateImageRequest", body)
            elif (request.method, request.path) == ("POST", "/v1/images/edits"):
                parts = form_parts(request)
                body = typed_form(parts)
                self._check("CreateImageEditRequest", body)
                self.edited += [data for name, _, _, data in parts if name == "image"]
            else:
                return error(f"Unknown request URL: {request.method} {request.path}", 404)
        except SchemaViolation as exc:
            return error(str(exc))
        if body.get("model") not in self.models:
            return error(f"model {body.get('model')!r} is not loaded", 404, code="model_not_found")
        return self._answer(body)

    @staticmethod
    def _check(definition: str, body: Any) -> None:
        check_body("openai.json", definition, body, closed=False)
        known = set(json.loads((SCHEMAS / "openai.json").read_text())["$defs"][definition]["properties"])
        unknown = set(body) - known - EXTENSIONS
        if unknown:
            raise SchemaViolation(f"fields neither OpenAI's nor a common extension: {sorted(unknown)}")

    def _answer(self, body: dict[str, Any]) -> Reply:
        prompt = str(body.get("prompt", ""))
        if "BLOCKME" in prompt:
            return error("Your request was rejected by the safety system.", code="content_policy_violation")
        if "FAILME" in prompt:
            return error("The server had an error while processing your request.", 500, type_="server_error")
        if "FLAKY" in prompt and self.once(prompt):
            return error("The engine is currently overloaded.", 503, type_="server_error")
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>oops</html>", {"content-type": "text/html"})
        count = int(body.get("n") or 1)
        if "URLS" in prompt or "ELSEWHERE" in prompt:
            host = self.url.replace("127.0.0.1", "localhost") if "ELSEWHERE" in prompt else self.url
            data: list[dict[str, Any]] = [{"url": f"{host}/files/{index}.png"} for index in range(count)]
        else:
            encoded = base64.b64encode(png()).decode()
            data = [{"b64_json": encoded, "revised_prompt": f"{prompt}, refined"} for _ in range(count)]
        return json_reply({"created": 1700000000, "data": data})
