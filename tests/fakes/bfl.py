"""A fake of the Black Forest Labs FLUX API, from https://docs.bfl.ai and the BFL OpenAPI
schema (schemas/bfl-flux.json): `x-key` auth, POST /v1/<endpoint> validated per endpoint (closed) with
FastAPI-style 422 `detail[]` errors, an async task per submit ({id, polling_url on this fake, cost}),
GET /v1/get_result?id= answering Pending then Ready / moderated / Error, and signed delivery URLs on
this fake (no key, expiring after `sample_ttl_s`).

Reference images ride in the same JSON body: `input_image` (`input_image_2..4`) on Kontext,
`image_prompt` on flux-pro-1.1 / ultra. Each must be raw base64 of a PNG, JPEG or WebP image (a data:
URL, an http(s) URL, which this fake does not fetch, or anything that does not decode is a 422); the
decoded bytes are kept on the task (`Task.inputs`) so tests can compare them with what they sent, and
`input_mp` reports their megapixels. The triggers below apply to edits alike (BLOCKME on an edit is
the input moderation BFL applies to prompt and image).

FLUX.1 Fill [pro] (/v1/flux-pro-1.0-fill) takes `image` and an optional `mask` (base64 like the
above); the mask must be the image's size (BFL checks the dimensions), and without one the image's
alpha channel is the mask, so an image without transparent pixels is a 422. Both are kept on the
task (`inputs["image"]`, `inputs["mask"]`).

Triggers (shared ones in tests/fakes/base.py): BLOCKME -> poll status "Request Moderated" (with
details); BLOCKME_OUTPUT -> "Content Moderated"; TASKERROR -> poll status "Error"; RATELIMIT(_ONCE) ->
429 active-task limit; FAILME -> 500; FLAKY -> 503 once; GARBAGE -> HTML 200 on submit; EMPTY ->
Ready without result.sample; SLOW -> Pending for `slow_s` (1.5 s).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.fakes.base import (
    FakeProvider,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    jpeg,
    json_reply,
    png,
    webp,
)

ENDPOINTS = {
    "flux-pro-1.1": "FluxPro11Inputs",
    "flux-dev": "FluxDevInputs",
    "flux-pro-1.1-ultra": "FluxUltraInput",
    "flux-kontext-pro": "FluxKontextProInputs",
    "flux-kontext-max": "FluxKontextProInputs",
    "flux-pro-1.0-fill": "FluxProFillInputs",
}
COST = {"flux-pro-1.1": 4.0, "flux-dev": 2.5, "flux-pro-1.1-ultra": 6.0, "flux-kontext-pro": 4.0,
        "flux-kontext-max": 8.0, "flux-pro-1.0-fill": 5.0}  # fmt: skip
DEFAULT_FORMAT = {"flux-kontext-pro": "png", "flux-kontext-max": "png"}  # others: jpeg
RATIO = re.compile(r"^([1-9][0-9]*):([1-9][0-9]*)$")
IMAGE_FIELDS = ("input_image", "input_image_2", "input_image_3", "input_image_4", "image_prompt", "image",
                "mask")  # fmt: skip
INPUT_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})


IMAGES = {"jpeg": (jpeg, "image/jpeg"), "png": (png, "image/png"), "webp": (webp, "image/webp")}


def _megapixels(data: bytes) -> float:
    with Image.open(io.BytesIO(data)) as image:
        return image.width * image.height / 1e6


def detail(message: str, status: int) -> Reply:
    return json_reply({"detail": message}, status)


def invalid(loc: list[str], msg: str, type_: str, value: object = None) -> Reply:
    return json_reply({"detail": [{"loc": ["body", *loc], "msg": msg, "type": type_, "input": value}]}, 422)


@dataclass
class Task:
    id: str
    endpoint: str
    prompt: str
    output_format: str
    seed: int | None
    created: float
    polls: int = 0
    done: bool = False
    inputs: dict[str, bytes] = field(default_factory=dict)  # reference image field -> decoded bytes


class FakeBFL(FakeProvider):
    PROVIDER = "bfl"
    BASE_PATH = "/v1"
    SMOKE_MODEL = "bfl/flux-pro-1.1"
    api_key = "bfl-fake-key"
    pending_polls = 1  # polls answered Pending before a task is Ready
    slow_s = 1.5  # how long a task whose prompt says SLOW stays Pending
    sample_ttl_s = 600.0  # how long a result.sample URL stays valid
    max_active_tasks = 24  # more concurrent unfinished tasks -> 429

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, Task] = {}
        self.credits: float | None = None  # None: unlimited; else spent per task, 402 when short
        self._tasks_lock = threading.Lock()

    def reset(self) -> None:
        super().reset()
        with self._tasks_lock:
            self.tasks.clear()
        self.credits = None

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/delivery/"):
            return self._deliver(request)
        if request.headers.get("x-key") != self.api_key:
            return detail("Not authenticated", 403)
        if request.method == "GET" and request.path == "/v1/get_result":
            return self._result((request.query.get("id") or [""])[0])
        endpoint = request.path.removeprefix("/v1/")
        if request.method != "POST" or endpoint not in ENDPOINTS:
            return detail("Not Found", 404)
        if not isinstance(request.json, dict):
            return invalid([], "Input should be a valid dictionary", "dict_type", request.json)
        try:
            check_body("bfl-flux.json", ENDPOINTS[endpoint], request.json)
        except SchemaViolation as exc:
            return invalid([], str(exc), "value_error")
        if problem := self._check_ratio(request.json.get("aspect_ratio")):
            return problem
        inputs: dict[str, bytes] = {}
        for name in IMAGE_FIELDS:
            if (value := request.json.get(name)) is not None:
                decoded = self._decode_input(name, value)
                if isinstance(decoded, Reply):
                    return decoded
                inputs[name] = decoded
        if endpoint == "flux-pro-1.0-fill" and (problem := self._check_fill(inputs)):
            return problem
        return self._submit(endpoint, request.json, inputs)

    @staticmethod
    def _check_fill(inputs: dict[str, bytes]) -> Reply | None:
        """Fill's mask: the image's size, or (without one) the image's alpha marking what to fill."""
        with Image.open(io.BytesIO(inputs["image"])) as image:
            size, alpha = image.size, image.convert("RGBA").getchannel("A")
            if "mask" in inputs:
                with Image.open(io.BytesIO(inputs["mask"])) as mask:
                    if mask.size != size:
                        return invalid(["mask"], "Mask dimensions must match the image", "value_error")
                return None
            if alpha.point(lambda value: 255 if value < 255 else 0).getbbox() is None:
                return invalid(
                    ["mask"], "A mask is required unless the image has an alpha mask", "value_error"
                )
        return None

    @staticmethod
    def _decode_input(name: str, value: str) -> bytes | Reply:
        """The image bytes of a base64 reference field, or the 422 BFL would answer."""
        if value.startswith(("http://", "https://")):
            return invalid([name], "This fake does not fetch image URLs", "value_error", value[:80])
        try:
            data = base64.b64decode(value, validate=True)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                if image.format not in INPUT_FORMATS:
                    raise ValueError(image.format)
        except (binascii.Error, ValueError, OSError):
            return invalid(
                [name], "Invalid image: expected base64 PNG, JPEG or WebP", "value_error", value[:80]
            )
        return data

    def _check_ratio(self, ratio: object) -> Reply | None:
        if ratio is None:
            return None
        match = RATIO.match(str(ratio))
        if not match or not 9 / 21 <= int(match.group(1)) / int(match.group(2)) <= 21 / 9:
            return invalid(
                ["aspect_ratio"], "Aspect ratio must be between 21:9 and 9:21", "value_error", ratio
            )
        return None

    def _submit(self, endpoint: str, body: dict[str, Any], inputs: dict[str, bytes] | None = None) -> Reply:
        prompt = body.get("prompt") or ""
        if reply := self._trigger(prompt):
            return reply
        with self._tasks_lock:
            if sum(not t.done for t in self.tasks.values()) >= self.max_active_tasks:
                return detail(
                    f"You have exceeded the number of active tasks ({self.max_active_tasks}). Please wait.",
                    429,
                )
            if self.credits is not None:
                if self.credits < COST[endpoint]:
                    return detail("Insufficient credits", 402)
                self.credits -= COST[endpoint]
            task = Task(str(uuid.uuid4()), endpoint, prompt,
                        body.get("output_format") or DEFAULT_FORMAT.get(endpoint, "jpeg"),
                        body.get("seed"), time.monotonic(), inputs=dict(inputs or {}))  # fmt: skip
            self.tasks[task.id] = task
        width, height = body.get("width", 1024), body.get("height", 768)
        return json_reply(
            {
                "id": task.id,
                "polling_url": f"{self.url}/v1/get_result?id={task.id}",
                "cost": COST[endpoint],
                "input_mp": round(sum(_megapixels(data) for data in task.inputs.values()), 2),
                "output_mp": round(width * height / 1e6, 2) if "aspect_ratio" not in body else 1.0,
            }
        )

    def _trigger(self, prompt: str) -> Reply | None:
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return detail("You have exceeded the number of active tasks (24). Please wait.", 429)
        if "FAILME" in prompt:
            return detail("Internal Server Error", 500)
        if "FLAKY" in prompt and self.once(prompt):
            return detail("Service temporarily unavailable for maintenance.", 503)
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>502 Bad Gateway</html>", {"content-type": "text/html"})
        return None

    def _result(self, task_id: str) -> Reply:
        with self._tasks_lock:
            task = self.tasks.get(task_id)
            if task is None:
                return json_reply({"id": task_id, "status": "Task not found", "result": None})
            task.polls += 1
            status, result, details = self._state(task)
            task.done = status != "Pending"
        progress = None if task.done else min(0.9, 0.3 * task.polls)
        body = {"id": task.id, "status": status, "result": result, "progress": progress, "details": details}
        return json_reply(body)

    def _state(self, task: Task) -> tuple[str, Any, Any]:
        prompt = task.prompt
        if "BLOCKME_OUTPUT" in prompt:
            return "Content Moderated", None, {"Moderation Reasons": ["Content Filter"]}
        if "BLOCKME" in prompt:
            return "Request Moderated", None, {"Moderation Reasons": ["Derivative Works Filter"]}
        if "TASKERROR" in prompt:
            return "Error", None, None
        slow = "SLOW" in prompt and time.monotonic() - task.created < self.slow_s
        if slow or task.polls <= self.pending_polls:
            return "Pending", None, None
        if "EMPTY" in prompt:
            return "Ready", {"prompt": prompt}, None
        expires = time.time() + self.sample_ttl_s
        sample = f"{self.url}/delivery/results/{task.id[:2]}/{task.id}/sample.{task.output_format}"
        return (
            "Ready",
            {
                "sample": f"{sample}?se={expires:.0f}&sig=fake-signature",
                "prompt": prompt,
                "seed": task.seed if task.seed is not None else 1234,
                "start_time": task.created,
                "end_time": time.monotonic(),
                "duration": time.monotonic() - task.created,
            },
            None,
        )

    def _deliver(self, request: Recorded) -> Reply:
        expires = float((request.query.get("se") or ["0"])[0])
        if (request.query.get("sig") or [""])[0] != "fake-signature" or time.time() > expires:
            body = b"<Error><Code>AuthenticationFailed</Code><Message>Signature not valid</Message></Error>"
            return Reply(403, body, {"content-type": "application/xml"})
        fmt = request.path.rsplit(".", 1)[-1]
        if fmt not in IMAGES:
            return Reply(
                404, b"<Error><Code>BlobNotFound</Code></Error>", {"content-type": "application/xml"}
            )
        make, media_type = IMAGES[fmt]
        return Reply(200, make(), {"content-type": media_type})
