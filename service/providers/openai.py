"""OpenAI Images API: GPT image models (gpt-image-*) and DALL-E 2/3 (shared/providers/openai.md).

POST {base}/images/generations, Bearer auth. GPT image models always answer base64 with token usage;
DALL-E is asked for base64 too, so no provider URL is ever needed. Quality words map across families
(standard -> medium, hd -> high for GPT image; the reverse for dall-e-3); style goes to dall-e-3 only.
providerOptions.openai may set background, moderation, output_format, output_compression.
"""

from __future__ import annotations

from typing import Any

from service.config import ProviderConfig, Settings
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult, ProviderUsage
from service.providers.upstream import Upstream, data_items, decode_image

GPT_QUALITY = {"standard": "medium", "hd": "high"}
DALLE3_QUALITY = {"low": "standard", "medium": "standard", "high": "hd"}
GPT_OPTIONS = ("background", "moderation", "output_format", "output_compression")
REFUSAL_CODES = frozenset({"content_policy_violation", "moderation_blocked"})


def is_refusal(status: int, body: Any, text: str) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    return error.get("code") in REFUSAL_CODES or error.get("type") == "image_generation_user_error"


def _is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def request_body(call: ImageCall) -> tuple[dict[str, Any], list[str]]:
    """(JSON body, warnings) for POST /images/generations."""
    model, warnings = call.upstream_model, []
    body: dict[str, Any] = {"model": model, "prompt": call.prompt, "n": call.n, "size": str(call.size)}
    if call.user:
        body["user"] = call.user
    if _is_gpt_image(model):
        if call.quality:
            body["quality"] = GPT_QUALITY.get(call.quality, call.quality)
        fields: dict[str, object] = {
            "background": call.background,
            "moderation": call.moderation,
            "output_format": call.output_format,
            "output_compression": call.output_compression,
        }
        fields.update({k: v for k, v in call.options.items() if k in GPT_OPTIONS})
        body.update({k: v for k, v in fields.items() if v is not None})
    else:
        body["response_format"] = "b64_json"
        if model == "dall-e-3":
            if call.quality:
                body["quality"] = DALLE3_QUALITY.get(call.quality, call.quality)
            if call.style:
                body["style"] = call.style
        ignored = [k for k, v in (("background", call.background), ("moderation", call.moderation)) if v]
        warnings += [f"{name} ignored: {model} does not support it" for name in ignored]
    unknown = sorted(set(call.options) - set(GPT_OPTIONS))
    if unknown:
        warnings.append(f"providerOptions.openai keys ignored: {', '.join(unknown)}")
    return body, warnings


def parse_usage(body: dict[str, Any]) -> ProviderUsage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    return ProviderUsage(
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        input_image_tokens=details.get("image_tokens"),
    )


class OpenAIProvider:
    name = "openai"

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> OpenAIProvider:
        headers = {"Authorization": f"Bearer {config.api_key}"}
        return cls(Upstream.from_config(config, settings, headers, is_refusal))

    async def generate(self, call: ImageCall) -> ImageCallResult:
        body, warnings = request_body(call)
        payload, response = await self._upstream.json_object(
            "POST", "/images/generations", call.deadline, json=body
        )
        images = []
        for item in data_items(self.name, payload):
            data, media_type = decode_image(self.name, item.get("b64_json"))
            images.append(GeneratedImage(data, media_type, item.get("revised_prompt")))
        return ImageCallResult(
            images=images,
            usage=parse_usage(payload),
            upstream_request_id=response.headers.get("x-request-id"),
            warnings=warnings,
        )

    async def aclose(self) -> None:
        await self._upstream.aclose()
