"""A fake of Recraft's external API, from https://www.recraft.ai/docs and the published OpenAPI model
(tests/fakes/schemas/recraft.json): Bearer auth, POST /v1/images/generations (JSON) and
/v1/images/imageToImage (multipart only, fields closed over the schema's allOf, the input image
decoded and held to Recraft's limits), the V2/V3 size table, substyle-belongs-to-style and model rules,
`credits`, base64 or self-served URL answers (SVG for vector styles), and `{code, message}` errors
(the envelope suggested by the doc; Recraft's real one is unconfirmed)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import time
import uuid
from typing import Any

from PIL import Image

from tests.fakes.base import SCHEMAS, SLOW_S, FakeProvider, Recorded, Reply, check_body, json_reply, png

SIZES = {
    "1024x1024", "1365x1024", "1024x1365", "1536x1024", "1024x1536", "1820x1024", "1024x1820",
    "2048x1024", "1024x2048", "1434x1024", "1024x1434", "1280x1024", "1024x1280", "1707x1024",
    "1024x1707", "1:1", "2:1", "1:2", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "6:10", "14:10",
    "10:14", "16:9", "9:16",
}  # fmt: skip
MODELS = {"recraftv3": "v3", "recraftv3_vector": "v3", "recraftv2": "v2", "recraft20b": "v2",
          "recraftv2_vector": "v2"}  # fmt: skip
VECTOR_STYLES = {"vector_illustration", "icon"}
# Recraft V3 substyles per base style (appendix "List of styles"; as used by ComfyUI's Recraft nodes).
V3_SUBSTYLES = {
    "realistic_image": {
        "b_and_w", "enterprise", "evening_light", "faded_nostalgia", "forest_life", "hard_flash", "hdr",
        "motion_blur", "mystic_naturalism", "natural_light", "natural_tones", "organic_calm",
        "real_life_glow", "retro_realism", "retro_snapshot", "studio_portrait", "urban_drama",
        "village_realism", "warm_folk",
    },
    "digital_illustration": {
        "2d_art_poster", "2d_art_poster_2", "antiquarian", "bold_fantasy", "child_book", "cover",
        "crosshatch", "digital_engraving", "engraving_color", "expressionism", "freehand_details",
        "grain", "grain_20", "graphic_intensity", "hand_drawn", "hand_drawn_outline", "handmade_3d",
        "hard_comics", "infantile_sketch", "long_shadow", "modern_folk", "multicolor", "neon_calm",
        "noir", "nostalgic_pastel", "outline_details", "pastel_gradient", "pastel_sketch", "pixel_art",
        "plastic", "pop_art", "pop_renaissance", "seamless", "street_art", "tablet_sketch", "urban_glow",
        "urban_sketching", "young_adult_book", "young_adult_book_2",
    },
    "vector_illustration": {
        "bold_stroke", "chemistry", "colored_stencil", "cosmics", "cutout", "depressive", "editorial",
        "emotional_flat", "engraving", "line_art", "line_circuit", "linocut", "marker_outline", "mosaic",
        "naivector", "roundish_flat", "seamless", "segmented_colors", "sharp_contrast", "thin",
        "vector_photo", "vivid_shapes",
    },
    "logo_raster": {"emblem_graffiti", "emblem_pop_art", "emblem_punk", "emblem_stamp", "emblem_vintage"},
    "icon": set(),
    "any": set(),
}  # fmt: skip
# imageToImage input limits (doc section 3): formats PIL names, side range, bytes.
I2I_FORMATS = {"PNG", "JPEG", "WEBP"}
I2I_SIDES = (256, 4096)
I2I_MAX_BYTES = 10 * 1024 * 1024
# Parts the multipart form cannot carry: the doc has controls (and text_layout) in the JSON form only.
I2I_JSON_ONLY = {"controls", "text_layout"}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'


def schema_properties(definition: str) -> dict[str, Any]:
    """Every property of a $defs entry, through its allOf/$ref chain (check_body's closed check
    reads only top-level properties, so the fake closes allOf definitions itself)."""
    defs = json.loads((SCHEMAS / "recraft.json").read_text())["$defs"]

    def collect(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return collect(defs[node["$ref"].rsplit("/", 1)[-1]])
        found = dict(node.get("properties", {}))
        for part in node.get("allOf", []):
            found.update(collect(part))
        return found

    return collect(defs[definition])


def typed_form(form: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """Multipart text parts as the types the schema gives them (files stay bytes); a bad number is
    a ValueError."""
    typed: dict[str, Any] = {}
    for name, value in form.items():
        kind = properties.get(name, {}).get("type")
        if isinstance(value, bytes) or kind not in ("integer", "number", "boolean"):
            typed[name] = value
        elif kind == "integer":
            typed[name] = int(value)
        elif kind == "number":
            typed[name] = float(value)
        else:
            typed[name] = {"true": True, "false": False}[value]
    return typed


def error(code: str, message: str, status: int = 400) -> Reply:
    return json_reply({"code": code, "message": message}, status)


def webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 200, 30)).save(out, format="WEBP")
    return out.getvalue()


class FakeRecraft(FakeProvider):
    PROVIDER = "recraft"
    BASE_PATH = "/v1"
    SMOKE_MODEL = "recraft/recraft-v3"
    api_key = "rc-fake-recraft"
    # A custom style (style_id) created from a vector base style: it answers SVG.
    VECTOR_STYLE_ID = "5b4a7c1e-2f3d-4e6a-9b8c-0d1e2f3a4b5c"

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        """Forget requests, triggers seen, served files and test switches (for a reused server)."""
        super().reset()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.always_url = False  # answer URLs even when b64_json was asked (exercises downloads)
        self.revised_prompts = False  # fill revised_prompt (in the model, not seen populated for V2/V3)
        self.inputs: list[bytes] = []  # imageToImage input images that decoded and passed the limits

    def handle(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path.startswith("/files/"):
            found = self.files.get(request.path.removeprefix("/files/"))
            if found is None:
                return Reply(404, b"expired", {"content-type": "text/plain"})
            return Reply(200, found[0], {"content-type": found[1]})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error("unauthorized", "invalid API token", 401)
        if (request.method, request.path) == ("POST", "/v1/images/generations"):
            if not isinstance(request.json, dict):
                return error("invalid_request", "expected a JSON body")
            check_body("recraft.json", "GenerateImageRequestBase", request.json)
            if isinstance(request.json.get("controls"), dict):
                check_body("recraft.json", "UserControls", request.json["controls"])
            return self._generate(request.json)
        if (request.method, request.path) == ("POST", "/v1/images/imageToImage"):
            return self._image_to_image(request)
        return error("not_found", f"unknown endpoint {request.method} {request.path}", 404)

    def _generate(self, body: dict[str, Any]) -> Reply:
        model, prompt = body.get("model", "recraftv3"), body["prompt"]
        if problem := self._check(model, body):
            return problem
        if reply := self._trigger(prompt):
            return reply
        style = body.get("style")
        vector = (
            model.endswith("_vector")
            or style in VECTOR_STYLES
            or body.get("style_id") == self.VECTOR_STYLE_ID
        )
        return self._answer(body, body.get("n", 1), model, vector)

    def _check(self, model: str, body: dict[str, Any]) -> Reply | None:
        family = MODELS.get(model)
        if family is None:
            return error("invalid_request", f"model {model} is not supported")
        if len(body["prompt"]) > 1000:
            return error("invalid_request", "prompt is too long")
        if not 1 <= body.get("n", 1) <= 6:
            return error("invalid_request", "n must be between 1 and 6")
        if body.get("size", "1024x1024") not in SIZES:
            return error("invalid_request", f"size {body['size']} is not supported")
        if "style" in body and "style_id" in body:
            return error("invalid_request", "style and style_id are mutually exclusive")
        style, substyle = body.get("style"), body.get("substyle")
        if family == "v3" and style is not None and style not in V3_SUBSTYLES:
            return error("invalid_request", f"style {style} is not supported by {model}")
        if family == "v3" and substyle is not None and substyle not in V3_SUBSTYLES.get(style or "any", ()):
            return error("invalid_request", f"substyle {substyle} does not belong to style {style}")
        for v3_only in ("negative_prompt", "text_layout"):
            if family != "v3" and v3_only in body:
                return error("invalid_request", f"{v3_only} is not supported by {model}")
        level = body.get("controls", {}).get("artistic_level")
        if level is not None and not 0 <= level <= 5:
            return error("invalid_request", "artistic_level must be between 0 and 5")
        return None

    def _answer(self, body: dict[str, Any], n: int, model: str, vector: bool) -> Reply:
        if vector:
            data, media_type, ext = SVG, "image/svg+xml", "svg"
        elif body.get("image_format") == "webp":
            data, media_type, ext = webp(), "image/webp", "webp"
        else:
            data, media_type, ext = png(), "image/png", "png"
        items = []
        for _ in range(n):
            item: dict[str, Any] = {"image_id": str(uuid.uuid4())}
            if body.get("response_format") == "b64_json" and not self.always_url:
                item["b64_json"] = base64.b64encode(data).decode()
            else:
                name = f"{next(self._ids)}/{'vector' if vector else 'raster'}_image.{ext}"
                self.files[name] = (data, media_type)
                item["url"] = f"{self.url}/files/{name}"
            if self.revised_prompts:
                item["revised_prompt"] = f"A detailed rendering of {body['prompt']}"
            items.append(item)
        per_image = (40 if model.startswith("recraftv3") else 22) * (2 if vector else 1)
        return json_reply({"created": int(time.time()), "credits": per_image * n, "data": items})

    def _image_to_image(self, request: Recorded) -> Reply:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error("invalid_request", "expected a multipart/form-data body")
        form = request.form
        properties = schema_properties("ImageToImageRequest")
        if unknown := set(form) - set(properties):
            return error("invalid_request", f"unknown fields: {sorted(unknown)}")
        if json_only := set(form) & I2I_JSON_ONLY:
            return error("invalid_request", f"{sorted(json_only)} only in the JSON form")
        image = form.get("image")
        if not isinstance(image, bytes):
            return error("invalid_request", "image must be a file part")
        if {name for name, value in form.items() if isinstance(value, bytes)} != {"image"}:
            return error("invalid_request", "only image may be a file part")
        try:
            body = typed_form(form, properties)
        except (ValueError, KeyError):
            return error("invalid_request", "a form field has the wrong type")
        check_body("recraft.json", "ImageToImageRequest", {**body, "image": "<binary>"}, closed=False)
        if problem := self._check_input(image):
            return problem
        if not 0 <= body["strength"] <= 1:
            return error("invalid_request", "strength must be between 0 and 1")
        model = body.setdefault("model", "recraftv3")
        if problem := self._check(model, body):
            return problem
        if reply := self._trigger(body["prompt"]):
            return reply
        vector = (
            model.endswith("_vector")
            or body.get("style") in VECTOR_STYLES
            or body.get("style_id") == self.VECTOR_STYLE_ID
        )
        return self._answer(body, body.get("n", 1), model, vector)

    def _check_input(self, image: bytes) -> Reply | None:
        """The input image must decode as PNG, JPEG or WebP within Recraft's limits."""
        if len(image) > I2I_MAX_BYTES:
            return error("invalid_request", "image is too large")
        try:
            with Image.open(io.BytesIO(image)) as decoded:
                decoded.load()
                kind, (width, height) = decoded.format, decoded.size
        except (OSError, ValueError):
            return error("invalid_request", "image is not a readable image")
        if kind not in I2I_FORMATS:
            return error("invalid_request", f"image format {kind} is not supported")
        low, high = I2I_SIDES
        if not (low <= width <= high and low <= height <= high):
            return error("invalid_request", f"image size {width}x{height} is out of range")
        self.inputs.append(image)
        return None

    def _trigger(self, prompt: str) -> Reply | None:
        if "BLOCKME" in prompt:
            return error("content_policy", "prompt contains prohibited content")
        if ("RATELIMIT_ONCE" in prompt and self.once(prompt)) or (
            "RATELIMIT" in prompt and "_ONCE" not in prompt
        ):
            return error("rate_limited", "too many requests", 429)
        if "FAILME" in prompt:
            return error("internal_error", "internal server error", 500)
        if "FLAKY" in prompt and self.once(prompt):
            return error("service_unavailable", "service temporarily unavailable", 503)
        if "GARBAGE" in prompt:
            return Reply(200, b"<html>upstream proxy error</html>", {"content-type": "text/html"})
        if "EMPTY" in prompt:
            return json_reply({"created": int(time.time()), "credits": 0, "data": []})
        if "SLOW" in prompt:
            time.sleep(SLOW_S)
        return None
