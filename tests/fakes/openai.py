"""A fake of the OpenAI Images API (generations, edits and variations), from
https://platform.openai.com/docs/api-reference/images and the official OpenAPI definition: Bearer
auth, per-model rules, b64 or URL answers, usage, and its error bodies.

Edits (POST /v1/images/edits) take the multipart form (CreateImageEditRequest; the image as `image`
or as repeated `image[]` parts, GPT image models only) or, for GPT image models, the JSON body
(EditImageBodyJsonParam, images as data: URLs here). Every image part must be an image of a type the
model takes, sent with that content type; dall-e-2 wants one square PNG with an alpha channel under
4 MB; a mask must be a PNG of the image's size. Variations (POST /v1/images/variations) take the
multipart CreateImageVariationRequest, dall-e-2 only, its image checked as a dall-e-2 edit's. `edited`
keeps the input images of every edit and variation, in order."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import time
from typing import Any

from PIL import Image

from tests.fakes.base import (
    SLOW_S,
    FakeProvider,
    Recorded,
    Reply,
    SchemaViolation,
    check_body,
    json_reply,
    png,
)

GPT_SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}
DALLE_SIZES = {
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
}
GPT_QUALITIES = {"low", "medium", "high", "auto"}
DALLE_QUALITIES = {"dall-e-3": {"standard", "hd"}, "dall-e-2": {"standard"}}
GPT_ONLY = {"output_format", "output_compression", "background", "moderation", "stream", "partial_images",
            "input_fidelity"}  # fmt: skip
EDIT_MODELS = {"dall-e-2", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2",
               "gpt-image-2-2026-04-21", "chatgpt-image-latest"}  # fmt: skip
GPT_INPUT_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
FORM_INTEGERS = {"n", "output_compression", "partial_images"}
FILE_PARTS = {"image", "mask"}


def error(message: str, status: int = 400, *, type_: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, **headers: str) -> Reply:  # fmt: skip
    return json_reply(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status, **headers
    )


def _gpt(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def form_parts(request: Recorded) -> list[tuple[str, str | None, str, bytes]]:
    """(name, filename, content type, bytes) of every multipart part, repeated names included."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.body
    )
    return [
        (str(part.get_param("name", header="content-disposition")), part.get_filename(),
         part.get_content_type(), bytes(part.get_payload(decode=True)))
        for part in message.iter_parts()
    ]  # fmt: skip


def typed_form(parts: list[tuple[str, str | None, str, bytes]]) -> dict[str, Any]:
    """The form as CreateImageEditRequest types it: numbers parsed, file parts as placeholders."""
    form: dict[str, Any] = {}
    for name, filename, _, payload in parts:
        key = name.removesuffix("[]")
        if (key in FILE_PARTS) != (filename is not None):
            raise SchemaViolation(f"{key}: {'must' if key in FILE_PARTS else 'must not'} be a file")
        if key in FILE_PARTS:
            form[key] = [*form.get(key, []), "<binary>"] if name.endswith("[]") else "<binary>"
        elif key in FORM_INTEGERS:
            try:
                form[key] = int(payload.decode())
            except ValueError:
                raise SchemaViolation(f"{key}: {payload.decode()!r} is not an integer") from None
        else:
            form[key] = {"true": True, "false": False}.get(payload.decode(), payload.decode())
    return form


def _data_url(ref: dict[str, Any]) -> tuple[str, bytes]:
    url = ref.get("image_url", "")
    if not url.startswith("data:image/") or ";base64," not in url:
        raise SchemaViolation("the fake takes only data: image URLs")
    head, _, data = url.partition(";base64,")
    return head.removeprefix("data:"), base64.b64decode(data)


class FakeOpenAI(FakeProvider):
    PROVIDER = "openai"
    BASE_PATH = "/v1"
    SMOKE_MODEL = "openai/gpt-image-1"
    api_key = "sk-fake-openai"

    def __init__(self) -> None:
        super().__init__()
        self.edited: list[bytes] = []  # the input images of every accepted edit, as they arrived

    def reset(self) -> None:
        super().reset()
        self.edited.clear()

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/files/"):
            return Reply(200, png(), {"content-type": "image/png"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error("Incorrect API key provided.", 401, code="invalid_api_key")
        if (request.method, request.path) == ("POST", "/v1/images/edits"):
            return self._edit(request)
        if (request.method, request.path) == ("POST", "/v1/images/variations"):
            return self._variation(request)
        if (request.method, request.path) != ("POST", "/v1/images/generations"):
            return error(f"Unknown request URL: {request.method} {request.path}", 404)
        body = request.json
        check_body("openai.json", "CreateImageRequest", body)
        return self._generate(body)

    def _edit(self, request: Recorded, deployed: str | None = None) -> Reply:
        """An edit; `deployed`: the model a deployment serves (Azure), which the body must not name."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            check_body("openai.json", "EditImageBodyJsonParam", request.json)
            body = dict(request.json)
            if not _gpt(body.get("model") or "gpt-image-1.5"):
                return error("JSON image edits support GPT image models only.", param="model")
            images = [_data_url(ref) for ref in body.pop("images")]
            mask = _data_url(body.pop("mask"))[1] if "mask" in body else None
        elif content_type.startswith("multipart/form-data"):
            parts = form_parts(request)
            body = typed_form(parts)
            check_body("openai.json", "CreateImageEditRequest", body)
            images = [(kind, data) for name, _, kind, data in parts if name.removesuffix("[]") == "image"]
            mask = request.form.get("mask")
        else:
            return error("Invalid Content-Type header, expected multipart/form-data.")
        if deployed is not None and "model" in body:
            return error("Unknown parameter: 'model'.", param="model", code="unknown_parameter")
        model = body.setdefault("model", deployed or "gpt-image-1.5")
        if model not in EDIT_MODELS:
            return error(f"Invalid value: '{model}'. Value must be one of {sorted(EDIT_MODELS)}.",
                         param="model", code="invalid_value")  # fmt: skip
        if problem := self._check_edit_images(model, body, images, mask):
            return problem
        return self._generate(body, default_model=model, input_images=len(images))

    def _variation(self, request: Recorded) -> Reply:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error("Invalid Content-Type header, expected multipart/form-data.")
        parts = form_parts(request)
        body = typed_form(parts)
        check_body("openai.json", "CreateImageVariationRequest", body)
        model = body.setdefault("model", "dall-e-2")
        if model != "dall-e-2":
            return error(
                f"Invalid value: '{model}'. Value must be 'dall-e-2'.", param="model", code="invalid_value"
            )
        images = [(kind, data) for name, _, kind, data in parts if name == "image"]
        if problem := self._check_edit_images(model, body, images, None):
            return problem
        return self._generate({**body, "prompt": ""}, default_model=model)

    def _check_edit_images(
        self, model: str, body: dict[str, Any], images: list[tuple[str, bytes]], mask: bytes | None
    ) -> Reply | None:
        if model == "dall-e-2" and isinstance(body.get("image"), list):
            return error("Invalid type for 'image': expected a file, but got an array instead.",
                         param="image", code="invalid_type")  # fmt: skip
        if model.endswith("-mini") and body.get("input_fidelity") is not None:
            return error(f"input_fidelity is not supported for {model}.", param="input_fidelity")
        allowed = GPT_INPUT_TYPES if _gpt(model) else {"image/png": "PNG"}
        decoded, received = [], []
        for kind, data in images:
            if kind not in allowed:
                return error(f"Invalid file 'image': unsupported mimetype ('{kind}'). Supported file formats "
                             f"are {', '.join(map(repr, sorted(allowed)))}.", param="image")  # fmt: skip
            try:
                image = Image.open(io.BytesIO(data))
                image.load()
            except OSError:
                return error("Invalid image file or mode for image 1, please check your image file.",
                             param="image", code="invalid_image_file")  # fmt: skip
            if image.format != allowed[kind] or len(data) > (50 if _gpt(model) else 4) * 1024 * 1024:
                return error("Invalid image file or mode for image 1, please check your image file.",
                             param="image", code="invalid_image_file")  # fmt: skip
            decoded.append(image)
            received.append(data)
        if not _gpt(model) and decoded:
            image = decoded[0]
            if image.mode not in ("RGBA", "LA", "L"):
                return error(
                    f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got {image.mode}."
                )
            if image.width != image.height:
                return error("Uploaded image must be a PNG and less than 4 MB and square.", param="image")
        if mask is not None:
            try:
                with Image.open(io.BytesIO(mask)) as opened:
                    fits = opened.format == "PNG" and opened.size == decoded[0].size
            except OSError:
                fits = False
            if not fits:
                return error("Invalid mask image: must be a PNG of the same size as the image.",
                             param="mask", code="invalid_image")  # fmt: skip
        self.edited += received
        return None

    def _generate(
        self, body: dict[str, Any], default_model: str = "dall-e-2", input_images: int = 0
    ) -> Reply:
        model, prompt = body.get("model", default_model), body["prompt"]
        gpt = _gpt(model)
        if problem := (self._check_gpt(body) if gpt else self._check_dalle(model, body)):
            return problem
        if reply := self._trigger(prompt, gpt):
            return reply
        n = body.get("n", 1)
        if gpt and body.get("stream"):
            return self._events(body, input_images)
        if gpt:
            return json_reply(
                {
                    "created": int(time.time()),
                    "data": [{"b64_json": base64.b64encode(png()).decode()} for _ in range(n)],
                    "size": body.get("size", "1024x1024") if body.get("size") != "auto" else "1024x1024",
                    "quality": body.get("quality", "medium") if body.get("quality") != "auto" else "medium",
                    "output_format": body.get("output_format", "png"),
                    "usage": {
                        "input_tokens": 12 + 194 * input_images,
                        "output_tokens": 4160 * n,
                        "total_tokens": 12 + 194 * input_images + 4160 * n,
                        "input_tokens_details": {"text_tokens": 12, "image_tokens": 194 * input_images},
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

    def _events(self, body: dict[str, Any], input_images: int) -> Reply:
        """A streamed GPT image answer (openai.md section 5): `partial_images` partial images, then
        the completed event with usage; each frame an `event:` line naming its `type`."""
        prefix, definitions = (
            ("image_edit", "ImageEdit") if input_images else ("image_generation", "ImageGen")
        )
        echo = {
            "created_at": int(time.time()),
            "size": body.get("size", "auto"),
            "quality": body.get("quality", "auto"),
            "background": body.get("background", "auto"),
            "output_format": body.get("output_format", "png"),
        }
        pause = 0.5 if "SLOWSTREAM" in body["prompt"] else 0.0
        frames: list[tuple[str, dict[str, Any]]] = []
        for index in range(body.get("partial_images") or 0):
            shade = 60 + 60 * index
            picture = base64.b64encode(png(color=(shade, shade, shade))).decode()
            partial = {"type": f"{prefix}.partial_image", "b64_json": picture, **echo}
            partial["partial_image_index"] = index
            frames.append((f"{definitions}PartialImageEvent", partial))
        image_tokens = 194 * input_images
        usage = {"input_tokens": 12 + image_tokens, "output_tokens": 4160,
                 "total_tokens": 4172 + image_tokens,
                 "input_tokens_details": {"text_tokens": 12, "image_tokens": image_tokens}}  # fmt: skip
        picture = base64.b64encode(png()).decode()
        frames.append((f"{definitions}CompletedEvent", {"type": f"{prefix}.completed", "b64_json": picture,
                                                        **echo, "usage": usage}))  # fmt: skip
        stream = []
        for definition, frame in frames:
            check_body("openai.json", definition, frame)  # what it sends is what OpenAI documents
            stream.append((pause, f"event: {frame['type']}\ndata: {json.dumps(frame)}\n\n".encode()))
        headers = {"content-type": "text/event-stream", "x-request-id": "req_fake_stream"}
        return Reply(200, headers=headers, stream=stream)

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
            time.sleep(SLOW_S)
        return None
