"""The Vertex AI adapter against a fake Vertex AI that is also the service account's token endpoint:
google-auth's real JWT-bearer flow runs on loopback, and every model call needs a token it issued."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.catalog.sizes import Size
from service.config import ProviderConfig, Settings, SettingsError, load_settings
from service.errors import ContentPolicyViolation, ModelNotAllowed, UpstreamError
from service.generation.reference_images import ReferenceImage
from service.providers.base import ImageCallResult
from service.providers.vertex import PROVIDER, VertexProvider
from tests.fakes.base import png
from tests.fakes.vertex import FakeVertex
from tests.providers.conftest import call, generate_with, rendered, run, shared_fake

server, fake = shared_fake(FakeVertex)
IMAGEN, GEMINI = "imagen-4.0-generate-001", "gemini-2.5-flash-image"
PREFIX = "/v1/projects/mg-fake-project/locations/us-central1/publishers/google/models"


def config(fake: FakeVertex, base_url: str | None = None, **settings: str) -> ProviderConfig:
    project = FakeVertex.api_key
    values = {**fake.settings(), **settings}
    return ProviderConfig(
        "vertex", project, base_url or fake.url, {"GOOGLE_CLOUD_PROJECT": project}, settings=values
    )


def generate(
    fake: FakeVertex, model: str, settings: dict[str, str] | None = None, **fields: Any
) -> ImageCallResult:
    return generate_with(VertexProvider.create, config(fake, **(settings or {})), model, **fields)


def test_imagen_request_with_a_token_from_the_service_account(fake: FakeVertex) -> None:
    options = {
        "seed": 7,
        "safetySetting": "block_only_high",
        "personGeneration": "allow_all",
        "enhancePrompt": True,
    }
    result = generate(fake, IMAGEN, n=3, size=Size(2688, 1512), options=options)
    token, sent = fake.requests
    assert token.path == "/token" and fake.token_requests == 1
    assert sent.path == f"{PREFIX}/{IMAGEN}:predict"
    assert sent.headers["authorization"] == "Bearer ya29.fake-1"
    assert sent.json == {
        "instances": [{"prompt": "a red fox in snow"}],
        "parameters": {"sampleCount": 3, "aspectRatio": "16:9", "sampleImageSize": "2K",
                       "personGeneration": "ALLOW_ALL", "includeRaiReason": True, "seed": 7,
                       "addWatermark": False,
                       "enhancePrompt": True, "safetySetting": "BLOCK_ONLY_HIGH"},
    }  # fmt: skip
    assert len(result.images) == 3
    assert result.images[0].revised_prompt == "A detailed, well-lit rendering of a red fox in snow"


def test_gemini_image_models_use_generate_content(fake: FakeVertex) -> None:
    reference = ReferenceImage(png(), "image/png", 8, 8)
    result = generate(fake, GEMINI, reference_image=reference, options={"seed": 3, "addWatermark": False})
    sent = fake.generation_requests()[-1]
    assert sent.path == f"{PREFIX}/{GEMINI}:generateContent"
    assert sent.json["contents"][0]["parts"][1]["inlineData"]["mimeType"] == "image/png"
    assert sent.json["generationConfig"]["seed"] == 3
    assert len(result.images) == 1 and result.usage is not None and result.usage.output_tokens == 1290
    assert rendered(result) == [f"providerOptions.vertex.addWatermark ignored: {GEMINI} does not take it"]


def test_a_token_is_reused_until_it_nears_expiry_and_refreshed_once_for_concurrent_calls(
    fake: FakeVertex,
) -> None:
    async def calls(count: int, together: bool) -> None:
        provider = VertexProvider.create(config(fake), Settings())
        try:
            if together:
                await asyncio.gather(*(provider.generate(call(IMAGEN)) for _ in range(count)))
            else:
                for _ in range(count):
                    await provider.generate(call(IMAGEN))
        finally:
            await provider.aclose()

    run(calls(3, together=True))
    assert fake.token_requests == 1
    run(calls(2, together=False))
    assert fake.token_requests == 2  # one more adapter, one more token
    fake.token_lifetime_s = 60  # inside google-auth's refresh margin: never reused
    run(calls(2, together=False))
    assert fake.token_requests == 4


def test_a_key_the_token_endpoint_refuses_is_an_upstream_error_and_no_call(
    fake: FakeVertex, tmp_path: Path
) -> None:
    account = json.loads(fake.credentials_file.read_text())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**account, "private_key": pem.decode()}))
    with pytest.raises(UpstreamError, match="could not get an access token"):
        generate(fake, IMAGEN, settings={"GOOGLE_APPLICATION_CREDENTIALS": str(forged)})
    assert fake.token_requests == 1 and fake.generation_requests() == [fake.requests[0]]  # only /token


def test_a_revoked_token_is_a_credentials_error(fake: FakeVertex) -> None:
    async def twice() -> None:
        provider = VertexProvider.create(config(fake), Settings())
        try:
            await provider.generate(call(IMAGEN))
            fake.issued.clear()  # revoked while the adapter still holds it
            await provider.generate(call(IMAGEN))
        finally:
            await provider.aclose()

    with pytest.raises(UpstreamError, match=r"credentials.*invalid authentication credentials"):
        run(twice())


def test_the_location_picks_the_endpoint_and_the_path(fake: FakeVertex) -> None:
    fake.location = "europe-west4"
    generate(fake, IMAGEN, settings={"GOOGLE_CLOUD_LOCATION": "europe-west4"})
    assert "/locations/europe-west4/" in fake.generation_requests()[-1].path

    async def url(location: str) -> str:
        provider = VertexProvider.create(
            config(fake, PROVIDER.default_base_url, GOOGLE_CLOUD_LOCATION=location), Settings()
        )
        try:
            return provider._upstream.url("/v1")
        finally:
            await provider.aclose()

    assert run(url("asia-northeast1")) == "https://asia-northeast1-aiplatform.googleapis.com/v1"
    assert run(url("global")) == "https://aiplatform.googleapis.com/v1"


def test_imagen_refusals_carry_the_rai_reason(fake: FakeVertex) -> None:
    with pytest.raises(ContentPolicyViolation, match="safety filter threshold filtered out"):
        generate(fake, IMAGEN, prompt="BLOCKME fox", n=2)
    result = generate(fake, IMAGEN, prompt="FILTERONE fox", n=3)
    assert len(result.images) == 2
    assert rendered(result) == ["n: 1 of 3 images were removed by Imagen's safety filters"]


@pytest.mark.parametrize("prompt", ["BLOCKME", "BLOCKIMAGE"])
def test_gemini_refusals(fake: FakeVertex, prompt: str) -> None:
    with pytest.raises(ContentPolicyViolation):
        generate(fake, GEMINI, prompt=f"{prompt} fox")


def test_imagen_takes_no_reference_image(fake: FakeVertex) -> None:
    with pytest.raises(ModelNotAllowed):
        generate(fake, IMAGEN, reference_image=ReferenceImage(png(), "image/png", 8, 8))
    assert fake.requests == []


def test_rate_limits_are_retried_and_failures_are_upstream_errors(fake: FakeVertex) -> None:
    assert len(generate(fake, IMAGEN, prompt="RATELIMIT_ONCE fox").images) == 1
    assert len(fake.generation_requests()) == 3  # the token, the 429, the success
    with pytest.raises(UpstreamError, match="internal error"):
        generate(fake, IMAGEN, prompt="FAILME")


def test_settings_use_the_sdks_variables(tmp_path: Path) -> None:
    environ = {"GOOGLE_CLOUD_PROJECT": "p", "GOOGLE_CLOUD_LOCATION": "europe-west4",
               "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/sa.json"}  # fmt: skip
    provider = load_settings(environ).providers["vertex"]
    assert (provider.api_key, provider.base_url) == ("p", "https://{location}-aiplatform.googleapis.com")
    assert provider.settings == {
        "GOOGLE_CLOUD_LOCATION": "europe-west4",
        "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/sa.json",
    }
    assert "vertex" not in load_settings({"GOOGLE_APPLICATION_CREDENTIALS": "/secrets/sa.json"}).providers


def test_a_credentials_file_of_another_kind_is_a_settings_error(fake: FakeVertex, tmp_path: Path) -> None:
    source = tmp_path / "external.json"
    source.write_text(json.dumps({"type": "external_account", "credential_source": {"executable": {}}}))
    with pytest.raises(SettingsError, match="'external_account' credentials"):
        generate(fake, IMAGEN, settings={"GOOGLE_APPLICATION_CREDENTIALS": str(source)})
    assert fake.requests == []


CAPABILITY = "imagen-3.0-capability-001"


def openai_mask(width: int, height: int) -> bytes:
    """An OpenAI-style mask: opaque, its top half transparent (what to change)."""
    import io

    from PIL import Image

    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, width, height // 2))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def test_an_imagen_edit_with_a_mask_sends_raw_and_mask_references(fake: FakeVertex) -> None:
    picture = ReferenceImage(png(64, 48), "image/png", 64, 48)
    mask = ReferenceImage(openai_mask(64, 48), "image/png", 64, 48)
    options = {"baseSteps": 35, "maskDilation": 0.03, "seed": 5, "imageSize": "2K", "enhancePrompt": True}
    result = generate(fake, CAPABILITY, n=2, input_images=(picture,), mask=mask, options=options)
    sent = fake.generation_requests()[-1]
    assert sent.path == f"{PREFIX}/{CAPABILITY}:predict"
    (instance,) = sent.json["instances"]
    raw, masked = instance["referenceImages"]
    assert instance["prompt"] == "a red fox in snow"
    assert (raw["referenceType"], raw["referenceId"]) == ("REFERENCE_TYPE_RAW", 1)
    assert raw["referenceImage"]["bytesBase64Encoded"] == base64.b64encode(picture.data).decode()
    assert (masked["referenceType"], masked["referenceId"]) == ("REFERENCE_TYPE_MASK", 2)
    assert masked["maskImageConfig"] == {"maskMode": "MASK_MODE_USER_PROVIDED", "dilation": 0.03}
    assert sent.json["parameters"] == {
        "sampleCount": 2, "includeRaiReason": True, "editMode": "EDIT_MODE_INPAINT_INSERTION",
        "editConfig": {"baseSteps": 35}, "seed": 5, "addWatermark": False,
    }  # fmt: skip
    ((_, sent_mask, _),) = fake.edits
    assert sent_mask is not None and sent_mask.size == (64, 48)
    assert sent_mask.getpixel((5, 5)) == 255 and sent_mask.getpixel((5, 40)) == 0  # white: edited
    assert [image.data for image in result.images] == [png(64, 48, (30, 160, 60))] * 2
    assert rendered(result) == [
        "providerOptions.vertex.imageSize ignored: an edit does not take it",
        "providerOptions.vertex.enhancePrompt ignored: an edit does not take it",
        "size ignored: 1024x1024 asked; an Imagen edit keeps the input image's size",
    ]


def test_an_imagen_edit_mode_and_a_maskless_edit(fake: FakeVertex) -> None:
    picture = ReferenceImage(png(32, 32), "image/png", 32, 32)
    mask = ReferenceImage(openai_mask(32, 32), "image/png", 32, 32)
    generate(fake, CAPABILITY, size=Size(32, 32), input_images=(picture,), mask=mask,
             options={"editMode": "edit_mode_outpaint"})  # fmt: skip
    assert fake.generation_requests()[-1].json["parameters"]["editMode"] == "EDIT_MODE_OUTPAINT"
    result = generate(fake, CAPABILITY, size=Size(32, 32), input_images=(picture,), options={"baseSteps": 9})
    body = fake.generation_requests()[-1].json
    assert [r["referenceType"] for r in body["instances"][0]["referenceImages"]] == ["REFERENCE_TYPE_RAW"]
    assert body["parameters"] == {"sampleCount": 1, "includeRaiReason": True, "editMode": "EDIT_MODE_DEFAULT"}
    assert rendered(result) == [
        "providerOptions.vertex.baseSteps ignored: it applies only to an edit with a mask"
    ]


def test_an_imagen_edit_refused_by_the_filter_is_a_refusal(fake: FakeVertex) -> None:
    picture = ReferenceImage(png(32, 32), "image/png", 32, 32)
    with pytest.raises(ContentPolicyViolation):
        generate(fake, CAPABILITY, prompt="BLOCKME", size=Size(32, 32), input_images=(picture,))


def test_the_editing_model_does_not_generate_without_an_image(fake: FakeVertex) -> None:
    with pytest.raises(ModelNotAllowed, match="only edits"):
        generate(fake, CAPABILITY)
    assert fake.generation_requests() == []


def test_gemini_on_vertex_takes_every_input_image(fake: FakeVertex) -> None:
    pictures = tuple(ReferenceImage(png(8, 8, (i, 9, 9)), "image/png", 8, 8) for i in range(3))
    generate(fake, GEMINI, input_images=pictures)
    parts = fake.generation_requests()[-1].json["contents"][0]["parts"]
    inline = [part["inlineData"]["data"] for part in parts if "inlineData" in part]
    assert inline == [base64.b64encode(picture.data).decode() for picture in pictures]
