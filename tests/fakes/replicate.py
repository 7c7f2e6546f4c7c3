"""A fake of Replicate's predictions API, from Replicate's HTTP API reference, the models' input
schemas on replicate.com and schemas/replicate.json (the Stainless SDK types and cog-flux's inputs):
Bearer auth (problem-details errors: `{title, detail, status}`), POST /v1/models/<owner>/<name>/predictions
({input}) and POST /v1/predictions ({version, input}) validated (closed) against
ModelPredictionCreateRequest / PredictionCreateRequest and the model's input (FluxSchnellInput for
flux-schnell; flux-dev's and flux-1.1-pro's below, from their pages), answering a Prediction (201);
GET /v1/predictions/<id>; POST /v1/predictions/<id>/cancel; output files on this fake served
without a key.

`Prefer: wait[=N]` (N 1-60) makes the create call answer the finished prediction when it finishes
inside the wait (`finishes_in_wait`, true by default; never for SLOW or JOBFAIL); otherwise it
answers `starting` and the prediction advances on the fake's clock, which every read moves
`tick_s` seconds: `starting` for `start_s`, `processing` until `runtime_s`, then ended.

Triggers (shared ones in tests/fakes/base.py): BLOCKME -> `failed` with the NSFW error; JOBFAIL ->
`failed` half-way with a CUDA error; SLOW -> runs `slow_s` of the fake's clock; RATELIMIT(_ONCE) ->
429 with Retry-After; FAILME -> 500; FLAKY -> 503 once; GARBAGE -> HTML 200 on create; EMPTY ->
`succeeded` with an empty output.
"""

from __future__ import annotations

import datetime
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
    webp,
)

RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
# flux-dev's and flux-1.1-pro's inputs as their replicate.com API pages list them.
MODEL_INPUTS: dict[str, dict[str, Any]] = {
    "black-forest-labs/flux-dev": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string"},
            "aspect_ratio": {"enum": RATIOS},
            "image": {"type": "string", "pattern": "^(https?://|data:image/)"},
            "prompt_strength": {"type": "number", "minimum": 0, "maximum": 1},
            "num_outputs": {"type": "integer", "minimum": 1, "maximum": 4},
            "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 50},
            "guidance": {"type": "number", "minimum": 0, "maximum": 10},
            "seed": {"type": "integer"},
            "output_format": {"enum": ["webp", "jpg", "png"]},
            "output_quality": {"type": "integer", "minimum": 0, "maximum": 100},
            "disable_safety_checker": {"type": "boolean"},
            "go_fast": {"type": "boolean"},
            "megapixels": {"enum": ["1", "0.25"]},
        },
    },
    "black-forest-labs/flux-1.1-pro": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string"},
            "aspect_ratio": {"enum": [*RATIOS, "custom"]},
            "width": {"type": "integer", "minimum": 256, "maximum": 1440, "multipleOf": 32},
            "height": {"type": "integer", "minimum": 256, "maximum": 1440, "multipleOf": 32},
            "image_prompt": {"type": "string"},
            "safety_tolerance": {"type": "integer", "minimum": 1, "maximum": 6},
            "seed": {"type": "integer"},
            "output_format": {"enum": ["webp", "jpg", "png"]},
            "output_quality": {"type": "integer", "minimum": 0, "maximum": 100},
            "prompt_upsampling": {"type": "boolean"},
        },
    },
}
MODELS = {"black-forest-labs/flux-schnell", *MODEL_INPUTS}
SINGLE_OUTPUT = frozenset({"black-forest-labs/flux-1.1-pro"})
VERSIONS = {
    "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e": "black-forest-labs/flux-schnell"
}
PREDICTION = re.compile(r"^/v1/predictions/(?P<id>[a-z0-9]+)(?P<cancel>/cancel)?$")
MODEL_ROUTE = re.compile(r"^/v1/models/(?P<model>[^/]+/[^/]+)/predictions$")
PREFER = re.compile(r"^wait(=(?P<seconds>[0-9]+))?$")
NSFW = "NSFW content detected. Try running it again, or try a different prompt."


def problem(title: str, detail: str, status: int, **headers: str) -> Reply:
    return json_reply({"title": title, "detail": detail, "status": status}, status, **headers)


def check_input(model: str, model_input: Any) -> None:
    if model not in MODEL_INPUTS:
        check_body("replicate.json", "FluxSchnellInput", model_input)
        return
    check_written(MODEL_INPUTS[model], model_input, f"{model}'s input")


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    started: float  # the fake's clock
    runtime_s: float
    created_at: str
    canceled: bool = False

    @property
    def prompt(self) -> str:
        return str(self.input.get("prompt", ""))


class FakeReplicate(ClockedFake[Prediction]):
    PROVIDER = "replicate"
    BASE_PATH = "/v1"
    SMOKE_MODEL = "replicate/black-forest-labs/flux-schnell"
    api_key = "r8_fake_token"
    finishes_in_wait = True
    start_s = 0.5
    runtime_s = 2.0
    slow_s = 300.0

    def cancels(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/cancel")]

    def generation_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and not r.path.endswith("/cancel")]

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/delivery/"):
            return self._file(request.path)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return problem("Unauthenticated", "You did not pass a valid authentication token", 401)
        if match := PREDICTION.match(request.path):
            return self._existing(request.method, match.group("id"), bool(match.group("cancel")))
        if request.method != "POST":
            return problem("Not found", "The requested resource could not be found.", 404)
        if match := MODEL_ROUTE.match(request.path):
            model, definition, version = match.group("model"), "ModelPredictionCreateRequest", "hidden"
            if model not in MODELS:
                return problem("Not found", "The requested resource could not be found.", 404)
        elif request.path == "/v1/predictions":
            definition = "PredictionCreateRequest"
            version = str((request.json or {}).get("version", "")) if isinstance(request.json, dict) else ""
            model = VERSIONS.get(version, "")
            if not model:
                return problem(
                    "Invalid version or not permitted",
                    "The specified version does not exist (or perhaps you don't have permission to use it?)",
                    422,
                )
        else:
            return problem("Not found", "The requested resource could not be found.", 404)
        try:
            check_body("replicate.json", definition, request.json)
            check_input(model, request.json["input"])
        except SchemaViolation as exc:
            return problem("Input validation failed", f"- input: {exc}", 422)
        return self._create(model, version, request.json["input"], request.headers.get("prefer"))

    def _create(self, model: str, version: str, model_input: dict[str, Any], prefer: str | None) -> Reply:
        prompt = str(model_input.get("prompt", ""))
        if reply := self._trigger(prompt):
            return reply
        waits = prefer is not None and PREFER.match(prefer) is not None
        with self._jobs_lock:
            runtime = self.slow_s if "SLOW" in prompt else self.runtime_s
            now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
            prediction = Prediction(
                uuid.uuid4().hex[:26], model, version, model_input, self.clock, runtime, now
            )
            self.jobs[prediction.id] = prediction
            if waits and self.finishes_in_wait and not {"SLOW", "JOBFAIL"} & set(prompt.split()):
                prediction.started -= runtime  # it ran while the create call waited
            return json_reply(self._view(prediction), 201)

    def _trigger(self, prompt: str) -> Reply | None:
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return problem(
                "Request was throttled.",
                "Request was throttled. Expected available in 1 second.",
                429,
                **{"Retry-After": "1"},
            )
        if "FAILME" in prompt:
            return problem("Internal Server Error", "Something went wrong.", 500)
        if "FLAKY" in prompt and self.once(prompt):
            return problem("Service Unavailable", "Service temporarily unavailable.", 503)
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>Bad gateway</html>", {"content-type": "text/html"})
        return None

    def _existing(self, method: str, prediction_id: str, cancel: bool) -> Reply:
        with self._jobs_lock:
            prediction = self.jobs.get(prediction_id)
            if prediction is None:
                return problem("Not found", "The requested resource could not be found.", 404)
            if cancel and method == "POST":
                if self._state(prediction)[0] in ("starting", "processing"):
                    prediction.canceled = True
                return json_reply(self._view(prediction))
            if method == "GET" and not cancel:
                self.tick()
                return json_reply(self._view(prediction))
        return problem("Method Not Allowed", "Method not allowed.", 405)

    def _state(self, prediction: Prediction) -> tuple[str, Any, str | None]:
        """(status, output, error) at the fake's clock."""
        elapsed = self.clock - prediction.started
        prompt = prediction.prompt
        if prediction.canceled:
            return "canceled", None, None
        if "JOBFAIL" in prompt and elapsed >= prediction.runtime_s / 2:
            return "failed", None, "CUDA error: out of memory"
        if elapsed < self.start_s:
            return "starting", None, None
        if elapsed < prediction.runtime_s:
            return "processing", None, None
        if "BLOCKME" in prompt:
            return "failed", None, NSFW
        if "EMPTY" in prompt:
            return "succeeded", [], None
        fmt = prediction.input.get("output_format", "webp")
        count = 1 if prediction.model in SINGLE_OUTPUT else int(prediction.input.get("num_outputs", 1))
        files = [f"{self.url}/delivery/xezq/{prediction.id}/out-{index}.{fmt}" for index in range(count)]
        return "succeeded", (files[0] if prediction.model in SINGLE_OUTPUT else files), None

    def _view(self, prediction: Prediction) -> dict[str, Any]:
        status, output, error = self._state(prediction)
        base = f"{self.url}/v1/predictions/{prediction.id}"
        ended = status not in ("starting", "processing")
        return {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.version,
            "input": prediction.input,
            "logs": "",
            "output": output,
            "data_removed": False,
            "error": error,
            "status": status,
            "created_at": prediction.created_at,
            "completed_at": prediction.created_at if ended else None,
            "urls": {
                "cancel": f"{base}/cancel",
                "get": base,
                "web": f"https://replicate.com/p/{prediction.id}",
            },
            "metrics": {"predict_time": prediction.runtime_s} if ended else {},
        }

    def _file(self, path: str) -> Reply:
        fmt = path.rsplit(".", 1)[-1]
        files = {"webp": (webp, "image/webp"), "jpg": (jpeg, "image/jpeg"), "png": (png, "image/png")}
        if fmt in files:
            make, media_type = files[fmt]
            return Reply(200, make(), {"content-type": media_type})
        return Reply(404, b"not found", {"content-type": "text/plain"})
