"""A fake of fal.ai's queue API (queue.fal.run), from fal's queue and model-error docs and the fal-js
types (schemas/fal.json): `Authorization: Key` auth (Bearer is a 401), POST /<app> validated against
the app's input (FluxSchnellInput for the FLUX.1 apps; the FLUX1.1 [pro] inputs below, from fal's
API reference pages, for the others; closed) answering the submit envelope, GET
/<owner>/<name>/requests/<id>/status (QueueStatus), GET /<owner>/<name>/requests/<id> (the output,
FluxSchnellOutput, or the error the request ended with; "Request is still in progress" before),
PUT .../cancel, and image files on this fake served without a key. Status and result paths drop
the app's sub-path, as fal's do; a request for them with the sub-path is a 404.

The fake's clock: every status poll moves it `tick_s` seconds; a request is IN_QUEUE for its first
`queue_s`, IN_PROGRESS until `runtime_s`, then COMPLETED. Tests make a job take minutes by raising
`tick_s` instead of waiting.

Triggers (shared ones in tests/fakes/base.py): BLOCKME -> the result is a 422 content_policy_violation
(fal's model error); BLOCKME_SUBMIT -> the same 422 on submit; NSFW_ALL / NSFW_ONE -> every image /
the first one flagged in has_nsfw_concepts (and blank); JOBFAIL -> the runner disconnects half-way:
COMPLETED early, and the result is a 503 {detail, error_type}; SLOW -> the request runs `slow_s` of
the fake's clock; RATELIMIT(_ONCE), FAILME, FLAKY and GARBAGE on submit; EMPTY -> a result without
images.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from tests.fakes.base import (
    ClockedFake,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    check_written,
    jpeg,
    json_reply,
    png,
)

# FLUX1.1 [pro] and ultra inputs as fal's API reference pages list them (fal-ai/flux-pro/v1.1,
# fal-ai/flux-pro/v1.1-ultra); fal.json defines only the FLUX.1 apps.
_PRO_COMMON: dict[str, Any] = {
    "prompt": {"type": "string"},
    "seed": {"type": "integer"},
    "sync_mode": {"type": "boolean"},
    "num_images": {"type": "integer", "minimum": 1, "maximum": 4},
    "output_format": {"enum": ["jpeg", "png"]},
    "safety_tolerance": {"enum": ["1", "2", "3", "4", "5", "6"]},
    "enhance_prompt": {"type": "boolean"},
}
PRO_INPUTS: dict[str, dict[str, Any]] = {
    "fal-ai/flux-pro/v1.1": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            **_PRO_COMMON,
            "image_size": {"$ref": "#/$defs/FluxSchnellInput/properties/image_size"},
        },
    },
    "fal-ai/flux-pro/v1.1-ultra": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            **_PRO_COMMON,
            "aspect_ratio": {"enum": ["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]},
            "raw": {"type": "boolean"},
            "image_url": {"type": "string", "pattern": "^(https?://|data:image/)"},
            "image_prompt_strength": {"type": "number", "minimum": 0, "maximum": 1},
        },
    },
}
FLUX_1_APPS = frozenset({"fal-ai/flux/schnell", "fal-ai/flux/dev"})
APPS = FLUX_1_APPS | set(PRO_INPUTS)
REQUESTS = re.compile(r"^/(?P<root>[^/]+/[^/]+)/requests/(?P<id>[^/]+)(?P<tail>/status|/cancel)?$")


def model_error(msg: str, type_: str, loc: list[str], **extra: Any) -> Reply:
    """fal's model error: a 422 with a `detail[]` item, and X-Fal-Retryable."""
    item = {"loc": ["body", *loc], "msg": msg, "type": type_, **extra}
    return json_reply({"detail": [item]}, 422, **{"X-Fal-Retryable": "false"})


@dataclass
class Job:
    id: str
    app: str
    body: dict[str, Any]
    submitted: float  # on the fake's clock
    runtime_s: float
    cancelled: bool = False

    @property
    def root(self) -> str:
        return "/".join(self.app.split("/")[:2])

    @property
    def prompt(self) -> str:
        return str(self.body.get("prompt", ""))


class FakeFal(ClockedFake[Job]):
    PROVIDER = "fal"
    SMOKE_MODEL = "fal/flux/schnell"
    api_key = "fal-fake-key"
    queue_s = 0.5  # IN_QUEUE for this long, then IN_PROGRESS
    runtime_s = 2.0  # COMPLETED after this long
    slow_s = 300.0  # a SLOW request's runtime

    def cancels(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PUT"]

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/files/"):
            return self._file(request.path)
        if request.headers.get("authorization") != f"Key {self.api_key}":
            return json_reply({"detail": "Invalid authentication credentials"}, 401)
        match = REQUESTS.match(request.path)
        if match:
            return self._queue(request.method, match.group("root"), match.group("id"), match.group("tail"))
        app = request.path.lstrip("/")
        if request.method != "POST" or app not in APPS:
            return json_reply({"detail": "Not Found"}, 404)
        return self._submit(app, request.json)

    def _submit(self, app: str, body: Any) -> Reply:
        if not isinstance(body, dict):
            return model_error("Input should be a valid dictionary", "dict_type", [])
        try:
            if app in FLUX_1_APPS:
                check_body("fal.json", "FluxSchnellInput", body)
            else:
                check_written(PRO_INPUTS[app], body, f"{app}'s input", defs_from="fal.json")
        except SchemaViolation as exc:
            return model_error(str(exc), "value_error", [])
        prompt = str(body.get("prompt", ""))
        if reply := self._trigger(prompt):
            return reply
        with self._jobs_lock:
            runtime = self.slow_s if "SLOW" in prompt else self.runtime_s
            job = Job(str(uuid.uuid4()), app, body, self.clock, runtime)
            self.jobs[job.id] = job
        return json_reply({**self._urls(job), "status": "IN_QUEUE", "queue_position": 0})

    def _trigger(self, prompt: str) -> Reply | None:
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return json_reply({"detail": "Too many concurrent requests"}, 429, **{"X-Fal-Retryable": "true"})
        if "FAILME" in prompt:
            return json_reply({"detail": "Internal server error", "error_type": "internal_error"}, 500)
        if "FLAKY" in prompt and self.once(prompt):
            return json_reply(
                {"detail": "No runner available", "error_type": "runner_scheduling_failure"}, 503
            )
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>upstream connect error</html>", {"content-type": "text/html"})
        if "BLOCKME_SUBMIT" in prompt:
            return self._refusal(prompt)
        return None

    @staticmethod
    def _refusal(prompt: str) -> Reply:
        return model_error(
            "The content was flagged by a content checker.",
            "content_policy_violation",
            ["prompt"],
            url="https://docs.fal.ai/errors#content_policy_violation",
            input=prompt,
            categories=["sexual"],
        )

    def _urls(self, job: Job) -> dict[str, str]:
        base = f"{self.url}/{job.root}/requests/{job.id}"
        return {
            "request_id": job.id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def _state(self, job: Job) -> str:
        elapsed = self.clock - job.submitted
        if job.cancelled:
            return "COMPLETED"
        if "JOBFAIL" in job.prompt and elapsed >= job.runtime_s / 2:
            return "COMPLETED"
        if elapsed < self.queue_s:
            return "IN_QUEUE"
        return "IN_PROGRESS" if elapsed < job.runtime_s else "COMPLETED"

    def _queue(self, method: str, root: str, job_id: str, tail: str | None) -> Reply:
        with self._jobs_lock:
            job = self.jobs.get(job_id)
            if job is None or job.root != root:
                return json_reply({"detail": "Request not found"}, 404)
            if tail == "/status" and method == "GET":
                self.tick()
                state = self._state(job)
                extra: dict[str, Any] = {"queue_position": 0} if state == "IN_QUEUE" else {"logs": []}
                if state == "COMPLETED":
                    extra["metrics"] = {"inference_time": job.runtime_s}
                return json_reply({**self._urls(job), "status": state, **extra})
            if tail == "/cancel" and method == "PUT":
                if self._state(job) == "COMPLETED":
                    return json_reply({"status": "ALREADY_COMPLETED"}, 400)
                job.cancelled = True
                return json_reply({"status": "CANCELLATION_REQUESTED"}, 202)
            if tail is None and method == "GET":
                return self._result(job)
        return json_reply({"detail": "Method Not Allowed"}, 405)

    def _result(self, job: Job) -> Reply:
        if self._state(job) != "COMPLETED":
            return json_reply({"detail": "Request is still in progress"}, 400)
        if job.cancelled:
            return json_reply({"detail": "Request was cancelled", "error_type": "request_cancelled"}, 400)
        prompt = job.prompt
        if "JOBFAIL" in prompt:
            body = {"detail": "Runner disconnected unexpectedly", "error_type": "runner_disconnected"}
            return json_reply(body, 503, **{"X-Fal-Error-Type": "runner_disconnected"})
        if "BLOCKME" in prompt:
            return self._refusal(prompt)
        count = int(job.body.get("num_images", 1))
        fmt = job.body.get("output_format", "jpeg")
        flags = [("NSFW_ALL" in prompt) or ("NSFW_ONE" in prompt and index == 0) for index in range(count)]
        images = [] if "EMPTY" in prompt else [
            {"url": f"{self.url}/files/{job.id}-{index}.{fmt}", "width": 1024, "height": 768,
             "content_type": f"image/{fmt}"}
            for index in range(count)
        ]  # fmt: skip
        return json_reply(
            {
                "images": images,
                "timings": {"inference": 0.8},
                "seed": job.body.get("seed", 1234),
                "has_nsfw_concepts": flags,
                "prompt": prompt,
            }
        )

    def _file(self, path: str) -> Reply:
        fmt = path.rsplit(".", 1)[-1]
        if fmt == "png":
            return Reply(200, png(), {"content-type": "image/png"})
        if fmt == "jpeg":
            return Reply(200, jpeg(), {"content-type": "image/jpeg"})
        return Reply(404, b"not found", {"content-type": "text/plain"})
