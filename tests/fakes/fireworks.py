"""A fake of Fireworks AI's FLUX workflows, from Fireworks' API reference pages ("Generate an image
with FLUX.1 [schnell] FP8", "... FLUX.1 Kontext", "Get generated image from FLUX.1 Kontext"):
Fireworks publishes no machine-readable definition, so the request bodies are written below from
those pages (closed: a field they do not list fails). Bearer auth; errors in Fireworks' OpenAI-style
envelope.

- POST /inference/v1/workflows/accounts/fireworks/models/<flux-1-schnell-fp8 | flux-1-dev-fp8>/text_to_image:
  with `Accept: application/json`, {id, base64: [data URL], finishReason, seed}; with `Accept:
  image/png` or `image/jpeg`, the image itself with `Finish-Reason` and `Seed` headers.
- POST .../models/<flux-kontext-pro | flux-kontext-max> submits a job ({request_id});
  POST .../models/<model>/get_result with {"id"} answers {id, status, result, progress, details}:
  Pending, then Ready with result.sample (a URL on this fake, fetched without a key). Every poll
  moves the fake's clock `tick_s` seconds; a job is Ready after `runtime_s`.

Triggers (shared ones in tests/fakes/base.py): BLOCKME -> finishReason CONTENT_FILTERED
(text_to_image) / "Request Moderated" (Kontext); JOBFAIL -> Kontext status "Error" half-way; SLOW ->
a Kontext job runs `slow_s` of the fake's clock; RATELIMIT(_ONCE), FAILME, FLAKY, GARBAGE on every
POST that makes an image; EMPTY -> a text_to_image answer without base64.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from typing import Any

from tests.fakes.base import (
    ClockedFake,
    Recorded,
    Reply,
    SchemaViolation,
    check_written,
    jpeg,
    json_reply,
    png,
)

RATIOS = ["1:1", "21:9", "16:9", "3:2", "5:4", "4:5", "2:3", "9:16", "9:21", "4:3", "3:4"]
TEXT_TO_IMAGE = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string"},
        "aspect_ratio": {"enum": RATIOS},
        "guidance_scale": {"type": "number"},
        "num_inference_steps": {"type": "integer"},
        "seed": {"type": "integer"},
    },
}
KONTEXT = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string"},
        "input_image": {"type": ["string", "null"]},
        "seed": {"type": ["integer", "null"]},
        "aspect_ratio": {"type": ["string", "null"], "pattern": "^[0-9]+:[0-9]+$"},
        "output_format": {"enum": ["jpeg", "png"]},
        "webhook_url": {"type": ["string", "null"], "minLength": 1, "maxLength": 2083},
        "webhook_secret": {"type": ["string", "null"]},
        "prompt_upsampling": {"type": "boolean"},
        "safety_tolerance": {"type": "integer", "minimum": 0, "maximum": 6},
    },
}
ROUTE = re.compile(
    r"^/inference/v1/workflows/accounts/fireworks/models/(?P<model>[a-z0-9-]+)(?P<tail>/text_to_image|/get_result)?$"
)
FLUX_1 = frozenset({"flux-1-schnell-fp8", "flux-1-dev-fp8"})
KONTEXT_MODELS = frozenset({"flux-kontext-pro", "flux-kontext-max"})


def error(message: str, status: int, type_: str = "invalid_request_error") -> Reply:
    return json_reply(
        {"error": {"object": "error", "type": type_, "code": type_, "message": message}}, status
    )


@dataclass
class Job:
    id: str
    model: str
    body: dict[str, Any]
    submitted: float
    runtime_s: float

    @property
    def prompt(self) -> str:
        return str(self.body.get("prompt", ""))


class FakeFireworks(ClockedFake[Job]):
    PROVIDER = "fireworks"
    BASE_PATH = "/inference/v1"
    SMOKE_MODEL = "fireworks/flux-1-schnell-fp8"
    api_key = "fw-fake-key"
    runtime_s = 2.0
    slow_s = 300.0

    def generation_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and not r.path.endswith("/get_result")]

    def polls(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/get_result")]

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/samples/"):
            fmt = request.path.rsplit(".", 1)[-1]
            return Reply(200, png() if fmt == "png" else jpeg(), {"content-type": f"image/{fmt}"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error("The API key you provided is invalid.", 401, "unauthorized")
        match = ROUTE.match(request.path)
        if request.method != "POST" or match is None:
            return error("Not found", 404, "not_found")
        model, tail = match.group("model"), match.group("tail")
        if tail == "/text_to_image" and model in FLUX_1:
            return self._text_to_image(request)
        if tail is None and model in KONTEXT_MODELS:
            return self._submit(model, request.json)
        if tail == "/get_result" and model in KONTEXT_MODELS:
            return self._result(request.json)
        return error(f"Model {model} not found for this route", 404, "not_found")

    def _trigger(self, prompt: str) -> Reply | None:
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error("Request rate limit exceeded, please try again later.", 429, "rate_limit_exceeded")
        if "FAILME" in prompt:
            return error("Internal server error", 500, "internal_server_error")
        if "FLAKY" in prompt and self.once(prompt):
            return error("Service unavailable", 503, "service_unavailable")
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>502 Bad Gateway</html>", {"content-type": "text/html"})
        return None

    def _text_to_image(self, request: Recorded) -> Reply:
        try:
            check_written(TEXT_TO_IMAGE, request.json, "the text_to_image body")
        except SchemaViolation as exc:
            return error(str(exc), 400)
        prompt = request.json["prompt"]
        if reply := self._trigger(prompt):
            return reply
        reason = "CONTENT_FILTERED" if "BLOCKME" in prompt else "SUCCESS"
        seed = request.json.get("seed") or 1234
        accept = request.headers.get("accept", "")
        if accept.startswith("image/"):
            image = jpeg() if accept == "image/jpeg" else png()
            headers = {"content-type": accept, "Finish-Reason": reason, "Seed": str(seed)}
            return Reply(200, image, headers)
        encoded = [] if "EMPTY" in prompt else ["data:image/png;base64," + base64.b64encode(png()).decode()]
        return json_reply({"id": uuid.uuid4().hex, "base64": encoded, "finishReason": reason, "seed": seed})

    def _submit(self, model: str, body: Any) -> Reply:
        try:
            check_written(KONTEXT, body, "the Kontext body")
            if body.get("input_image") is not None:
                base64.b64decode(body["input_image"], validate=True)
        except (SchemaViolation, ValueError) as exc:
            return error(f"Invalid request: {exc}", 400)
        if reply := self._trigger(body["prompt"]):
            return reply
        with self._jobs_lock:
            runtime = self.slow_s if "SLOW" in body["prompt"] else self.runtime_s
            job = Job(uuid.uuid4().hex, model, body, self.clock, runtime)
            self.jobs[job.id] = job
        return json_reply({"request_id": job.id})

    def _result(self, body: Any) -> Reply:
        job_id = body.get("id") if isinstance(body, dict) else None
        with self._jobs_lock:
            job = self.jobs.get(str(job_id))
            if job is None:
                return json_reply({"id": job_id, "status": "Task not found", "result": None})
            self.tick()
            elapsed = self.clock - job.submitted
        state: dict[str, Any] = {"id": job.id, "status": "Pending", "result": None, "progress": None}
        if "JOBFAIL" in job.prompt and elapsed >= job.runtime_s / 2:
            state["status"] = "Error"
        elif elapsed >= job.runtime_s:
            if "BLOCKME" in job.prompt:
                state.update(status="Request Moderated", details={"Moderation Reasons": ["Content"]})
            else:
                fmt = job.body.get("output_format", "png")
                state.update(status="Ready", result={"sample": f"{self.url}/samples/{job.id}/sample.{fmt}"})
        return json_reply(state)
