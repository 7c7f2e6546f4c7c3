"""Any server with an OpenAI-shaped images API (LocalAI, vLLM-omni, a ComfyUI wrapper, an in-house
service), defined in the config file rather than in code:

    providers:
      studio:                        # any name that is not a built-in provider's; models are studio/<id>
        type: openai-compatible
        base_url: http://10.0.0.5:9000/v1
        api_key_env: STUDIO_KEY      # optional: without a key no Authorization header is sent
    models:
      studio/flux-dev: {provider: studio, upstream_id: flux-dev, sizes: [1024x1024], ...}

Several such providers can be defined at once; each gets its own adapter, built by the registry from
its ProviderConfig (type openai-compatible). The wire format is OpenAI's: POST {base}/images/generations
with {model, prompt, n, size, response_format: b64_json} plus the request's quality, style, user,
background, moderation, output_format and output_compression when the caller set them (the operator's
catalog entry says which the model offers); with a reference image, POST {base}/images/edits as
multipart/form-data, the image as the `image` file part (PNG, JPEG or WebP; a GIF is sent as PNG).
Answers are OpenAI's {data: [{b64_json | url, revised_prompt?}], usage?}; errors OpenAI's envelope
(a `content_policy_violation` / `moderation_blocked` code is a content refusal).

Image URLs in an answer are fetched only from the base URL's own scheme and host: the operator chose
that server, not where its answers point, so a URL elsewhere (another host, the gateway's own
network) is a 502 and is never fetched.

providerOptions.<name>: seed (int), negative_prompt (string), steps (int 1-500) and guidance_scale
(number 0-100), extensions many such servers take, sent as body fields; other keys are dropped with
a warning.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Self

from service.providers.adapter import HttpAdapter
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult
from service.providers.openai import is_refusal, parse_usage
from service.providers.options import Option, OptionsSchema, integer, number, string
from service.providers.upstream import Upstream, data_items, decode_image, malformed, revised_prompt

if TYPE_CHECKING:
    from service.config import ProviderConfig, Settings

TYPE = "openai-compatible"
OPTIONS: dict[str, Option] = {
    "seed": integer(0, 2**32 - 1),
    "negative_prompt": string(),
    "steps": integer(1, 500),
    "guidance_scale": number(0, 100),
}
PASSED_THROUGH = (
    "quality",
    "style",
    "user",
    "background",
    "moderation",
    "output_format",
    "output_compression",
)
EDIT_TYPES = ("image/png", "image/jpeg", "image/webp")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class CompatibleProvider(HttpAdapter):
    is_refusal = staticmethod(is_refusal)

    def __init__(self, upstream: Upstream, options: OptionsSchema) -> None:
        super().__init__(upstream)
        self._options = options

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> Self:
        upstream = Upstream.from_config(config, settings, cls.headers(config), cls.is_refusal)
        return cls(upstream, OptionsSchema(config.name, OPTIONS))

    @staticmethod
    def headers(config: ProviderConfig) -> dict[str, str]:
        return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}

    def request_body(self, call: ImageCall) -> tuple[dict[str, Any], list[Any]]:
        options, warnings = self._options.parse(call)
        body: dict[str, Any] = {
            "model": call.upstream_model,
            "prompt": call.prompt,
            "n": call.n,
            "size": str(call.size),
            "response_format": "b64_json",
        }
        body.update({name: getattr(call, name) for name in PASSED_THROUGH if getattr(call, name) is not None})
        body.update(options)
        return body, warnings

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = self.request_body(call)
        reference = call.reference_image
        if reference is None:
            payload, response = await self._upstream.json_object(
                "POST", "/images/generations", call.deadline, json=body
            )
        else:
            data, media_type = await asyncio.to_thread(reference.in_formats, EDIT_TYPES)
            files = {"image": (f"image.{EXTENSIONS[media_type]}", data, media_type)}
            form = {name: str(value) for name, value in body.items()}
            payload, response = await self._upstream.json_object(
                "POST", "/images/edits", call.deadline, data=form, files=files
            )
        items = data_items(self.name, payload)
        fetched = await asyncio.gather(*(self._image(item, call.deadline) for item in items))
        return ImageCallResult(
            images=[
                GeneratedImage(d, m, revised_prompt(item))
                for item, (d, m) in zip(items, fetched, strict=True)
            ],
            usage=parse_usage(payload),
            upstream_request_id=response.headers.get("x-request-id"),
            warnings=warnings,
        )

    async def _image(self, item: dict[str, Any], deadline: float) -> tuple[bytes, str]:
        """b64_json decoded, or a URL fetched when it is on the server's own host (never elsewhere)."""
        url = item.get("url")
        if item.get("b64_json") or not isinstance(url, str) or url.startswith("data:"):
            return decode_image(self.name, item.get("b64_json") or url)
        if self._upstream.on_base_host(url, "") != url:
            raise malformed(
                self.name, "an image URL outside its base URL's host, which the gateway does not fetch"
            )
        return await self._upstream.download(url, deadline)
