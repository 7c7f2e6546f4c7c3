"""A fake of Ideogram's API for Ideogram 3.0, from its API reference and its OpenAPI document
(tests/fakes/schemas/ideogram.json): `Api-Key` auth, POST /v1/ideogram-v3/generate (multipart, or
JSON as the document also allows), /v1/ideogram-v3/remix (multipart: the file part `image`) and
/v1/ideogram-v3/edit (multipart: the file parts `image` and `mask`), each form held closed to its
request definition (GenerateImageRequestV3, RemixImageRequestV3, EditImageRequestV3) with its text
parts typed as the document types them; `resolution` and `aspect_ratio` together refused; input
images decoded and held to JPEG / PNG / WebP of at most 10 MB; an edit's mask the image's size and
black and white. Answers are ImageGenerationResponseV3 (checked against the document before they
are sent) with ephemeral URLs served by this fake without the key; MagicPrompt ON rewrites the
prompt each item reports. Errors are `{"error": ...}`: a prompt that fails the safety check is a
422 (the document's GenerateImageSafetyError), a bad request a 400.

Triggers (shared ones in tests/fakes/base.py): BLOCKME -> the 422 safety error; UNSAFE_ONE /
UNSAFE_ALL -> the first / every image answered with is_image_safe false and no url; NOURL -> images
marked safe without a url (the document's url is nullable); BADPARAM -> a 422 that is not a safety
error; RATELIMIT(_ONCE), FAILME, FLAKY, GARBAGE, EMPTY, SLOW.
"""

from __future__ import annotations

import io
import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from tests.fakes.base import (
    SCHEMAS,
    SLOW_S,
    FakeProvider,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    json_reply,
    png,
)
from tests.fakes.recraft import typed_form

DEFINITIONS = {
    "/v1/ideogram-v3/generate": "GenerateImageRequestV3",
    "/v1/ideogram-v3/remix": "RemixImageRequestV3",
    "/v1/ideogram-v3/edit": "EditImageRequestV3",
}
INPUT_FORMATS = {"PNG", "JPEG", "WEBP"}
MAX_INPUT_BYTES = 10 * 1024 * 1024
SAFETY_ERROR = "Prompt provided failed safety check due to the inclusion of prohibited content."


def error(message: str, status: int = 400) -> Reply:
    return json_reply({"error": message}, status)


def definition(name: str) -> dict[str, Any]:
    """A $defs entry with each property's $ref resolved (so its form parts can be typed)."""
    defs = json.loads((SCHEMAS / "ideogram.json").read_text())["$defs"]
    entry = dict(defs[name])
    entry["properties"] = {
        key: defs[spec["$ref"].rsplit("/", 1)[-1]] if "$ref" in spec else spec
        for key, spec in entry["properties"].items()
    }
    return entry


def decoded(data: bytes) -> Image.Image | None:
    """The picture, if it is one Ideogram takes."""
    if len(data) > MAX_INPUT_BYTES:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy() if image.format in INPUT_FORMATS else None
    except (OSError, ValueError):
        return None


class FakeIdeogram(FakeProvider):
    PROVIDER = "ideogram"
    SMOKE_MODEL = "ideogram/v3"
    api_key = "idg-fake-ideogram"

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.files: dict[str, bytes] = {}  # ephemeral image name -> PNG
        self.inputs: list[bytes] = []  # remix / edit images that decoded and passed the limits
        self.masks: list[bytes] = []  # edit masks that passed

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/api/images/ephemeral/"):
            found = self.files.get(request.path.rsplit("/", 1)[-1])
            if found is None:
                return Reply(404, b"expired", {"content-type": "text/plain"})
            return Reply(200, found, {"content-type": "image/png"})
        if request.headers.get("api-key") != self.api_key:
            return json_reply({"detail": "Invalid API key."}, 401)
        name = DEFINITIONS.get(request.path) if request.method == "POST" else None
        if name is None:
            return error(f"unknown endpoint {request.method} {request.path}", 404)
        body = self._body(request, name)
        if isinstance(body, Reply):
            return body
        if "resolution" in body and "aspect_ratio" in body:
            return error("resolution and aspect_ratio cannot be used together")
        if problem := self._inputs(request, body):
            return problem
        if reply := self._trigger(body["prompt"]):
            return reply
        return self._answer(body)

    def _body(self, request: Recorded, name: str) -> dict[str, Any] | Reply:
        """The request's fields, typed and checked against `name`; a 400 for anything else."""
        properties = definition(name)["properties"]
        if request.json is not None and name == "GenerateImageRequestV3":
            fields: dict[str, Any] = request.json
        elif request.headers.get("content-type", "").startswith("multipart/form-data"):
            files = {key for key, value in request.form.items() if isinstance(value, bytes)}
            binary = {key for key, spec in properties.items() if spec.get("format") == "binary"}
            if files - binary:
                return error(f"{sorted(files - binary)} must be text fields")
            try:
                fields = typed_form(request.form, properties)
            except (ValueError, KeyError):
                return error("a form field has the wrong type")
        else:
            return error("expected multipart/form-data")
        shown = {key: "<binary>" if isinstance(value, bytes) else value for key, value in fields.items()}
        check_body("ideogram.json", name, shown)  # a SchemaViolation is the base's 400
        for key in definition(name).get("required", []):
            if not isinstance(fields.get(key), str if key == "prompt" else bytes):
                raise SchemaViolation(f"{key} is required")
        return fields

    def _inputs(self, request: Recorded, body: dict[str, Any]) -> Reply | None:
        """Remix and edit images (and an edit's mask) must be pictures Ideogram takes."""
        if "image" not in body:
            return None
        image = decoded(body["image"])
        if image is None:
            return error("image must be a JPEG, PNG or WebP image of at most 10MB")
        if request.path.endswith("/edit"):
            mask = decoded(body["mask"])
            if mask is None or mask.size != image.size:
                return error("mask must be an image the size of the image being edited")
            levels = {value for _, value in mask.convert("L").getcolors(256) or []}
            if not levels <= {0, 255}:
                return error("mask must be black and white, black where the image is to be edited")
            self.masks.append(body["mask"])
        self.inputs.append(body["image"])
        return None

    def _trigger(self, prompt: str) -> Reply | None:
        if "BLOCKME" in prompt:
            return error(SAFETY_ERROR, 422)
        if "BADPARAM" in prompt:
            return error("Invalid input: the prompt cannot be processed.", 422)
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error("Too many requests.", 429)
        if "FAILME" in prompt:
            return error("Internal server error.", 500)
        if "FLAKY" in prompt and self.once(prompt):
            return error("Service unavailable.", 503)
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>upstream proxy error</html>", {"content-type": "text/html"})
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        return None

    def _answer(self, body: dict[str, Any]) -> Reply:
        prompt = body["prompt"]
        count = 0 if "EMPTY" in prompt else body.get("num_images", 1)
        unsafe = count if "UNSAFE_ALL" in prompt else int("UNSAFE_ONE" in prompt)
        used = f"{prompt}, in crisp detail" if body.get("magic_prompt") == "ON" else prompt
        items = []
        for index in range(count):
            item: dict[str, Any] = {
                "prompt": used,
                "resolution": body.get("resolution", "1024x1024"),
                "is_image_safe": index >= unsafe,
                "seed": body.get("seed", 12345),
                "style_type": body.get("style_type", "GENERAL"),
                "url": None,
            }
            if item["is_image_safe"] and "NOURL" not in prompt:
                name = f"{next(self._ids)}.png"
                self.files[name] = png()
                item["url"] = f"{self.url}/api/images/ephemeral/{name}?exp=1743867804&sig=e13e"
            items.append(item)
        answer = {"created": datetime.now(UTC).isoformat(), "data": items}
        check_body("ideogram.json", "ImageGenerationResponseV3", answer)
        return json_reply(answer)
