"""The REST path as external callers see it: the official OpenAI SDK -> Envoy -> gRPC -> local provider."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.checks import assert_error, decode_png, validate
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def generate_raw(gateway: GatewayProcess, body: Any, **headers: str) -> httpx.Response:
    return gateway.generate(body, headers=headers)


def images(response: httpx.Response) -> list[bytes]:
    return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]


def test_sdk_gets_a_png_of_the_requested_size(client: openai.OpenAI) -> None:
    result = client.images.generate(model="local/sketch", prompt="a lighthouse at dusk", size="512x512")
    assert result.data is not None and len(result.data) == 1
    assert result.data[0].b64_json is not None
    image = decode_png(base64.b64decode(result.data[0].b64_json))
    assert image.size == (512, 512)


def test_response_shape_validates_against_the_official_schema(
    gateway: GatewayProcess, openai_schema: dict[str, object]
) -> None:
    response = generate_raw(
        gateway, {"model": "local/sketch", "prompt": "harbour", "size": "1024x1024", "n": 2}
    )
    assert response.status_code == 200
    body = response.json()
    validate(body, openai_schema, "ImagesResponse")
    assert body["id"].startswith("img_") and ULID.match(body["id"].removeprefix("img_"))
    assert isinstance(body["created"], int)
    assert body["model"] == "local/sketch"
    assert body["size"] == "1024x1024"
    usage = body["usage"]
    assert usage["output_images"] == len(body["data"]) == 2
    assert usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    validate(usage, openai_schema, "ImageGenUsage")
    assert ULID.match(response.headers["x-request-id"])
    # gRPC plumbing stays inside the gateway
    assert not any(name.startswith("grpc-") for name in response.headers)


def test_echo_fields_are_left_out_when_the_schema_does_not_allow_the_value(
    gateway: GatewayProcess, openai_schema: dict[str, object]
) -> None:
    response = generate_raw(
        gateway, {"model": "local/sketch", "prompt": "harbour", "size": "512x512", "quality": "hd"}
    )
    body = response.json()
    assert "size" not in body and "quality" not in body
    validate(body, openai_schema, "ImagesResponse")


def test_default_size_and_format(gateway: GatewayProcess) -> None:
    response = generate_raw(gateway, {"model": "local/sketch", "prompt": "a kite"})
    assert response.status_code == 200
    (data,) = images(response)
    assert decode_png(data).size == (1024, 1024)
    assert "url" not in response.json()["data"][0]


def test_n_above_the_per_call_maximum_fans_out_into_distinct_images(gateway: GatewayProcess) -> None:
    # local/canvas returns one image per upstream call: 3 images means 3 calls.
    response = generate_raw(gateway, {"model": "local/canvas", "prompt": "dunes", "size": "320x240", "n": 3})
    assert response.status_code == 200
    data = images(response)
    assert len(data) == 3 == response.json()["usage"]["output_images"]
    assert len(set(data)) == 3
    assert all(decode_png(d).size == (320, 240) for d in data)


def test_same_prompt_and_seed_render_the_same_image_and_others_differ(gateway: GatewayProcess) -> None:
    def render(prompt: str, seed: int) -> bytes:
        body = {
            "model": "local/sketch",
            "prompt": prompt,
            "size": "256x256",
            "providerOptions": {"local": {"seed": seed}},
        }
        response = generate_raw(gateway, body)
        assert response.status_code == 200, response.text
        return images(response)[0]

    assert render("a red fox", 7) == render("a red fox", 7)
    assert render("a red fox", 7) != render("a red fox", 8)
    assert render("a red fox", 7) != render("a blue whale", 7)


def test_other_providers_options_are_ignored(gateway: GatewayProcess) -> None:
    body = {
        "model": "local/sketch",
        "prompt": "x",
        "size": "256x256",
        "providerOptions": {"openai": {"seed": "nope"}},
    }
    assert generate_raw(gateway, body).status_code == 200


def test_eight_large_images_fit_through_the_edge(gateway: GatewayProcess) -> None:
    body = {
        "model": "local/canvas",
        "prompt": "a detailed city",
        "size": "1024x1024",
        "n": 8,
        "quality": "hd",
    }
    response = generate_raw(gateway, body)
    assert response.status_code == 200, response.text[:500]
    data = images(response)
    assert len(data) == 8
    assert sum(map(len, data)) > 4 * 1024 * 1024  # multi-megabyte, past every default limit
    assert decode_png(data[7]).size == (1024, 1024)


def test_models_lists_the_catalog_with_capabilities(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    ids = [model.id for model in client.models.list()]
    assert "local/sketch" in ids and "local/canvas" in ids
    listing = httpx.get(
        f"{gateway.http_url}/v1/models", headers={"Authorization": f"Bearer {gateway.key}"}
    ).json()
    sketch = next(m for m in listing["data"] if m["id"] == "local/sketch")
    assert sketch["object"] == "model" and sketch["owned_by"] == "local"
    assert "512x512" in sketch["capabilities"]["sizes"]
    assert sketch["capabilities"]["max_images_per_call"] == 4
    assert sketch["price"]["per_image_micros"]["default"] == 1000
    assert sketch["available"] is True


# --- errors through the SDK: the right exception class, code and param


@pytest.mark.parametrize(
    ("kwargs", "exception", "code", "param"),
    [
        ({"model": "nope/nothing", "prompt": "x"}, openai.NotFoundError, "MODEL_NOT_FOUND", "model"),
        (
            {"model": "local/sketch", "prompt": "x", "size": "big"},
            openai.BadRequestError,
            "INVALID_SIZE",
            "size",
        ),
        (
            {"model": "local/sketch", "prompt": "x", "size": "640x480"},
            openai.BadRequestError,
            "UNSUPPORTED_SIZE",
            "size",
        ),
        ({"model": "local/sketch", "prompt": "x", "n": 9}, openai.BadRequestError, "BAD_REQUEST", "n"),
        ({"model": "local/sketch", "prompt": "x", "n": 0}, openai.BadRequestError, "BAD_REQUEST", "n"),
        (
            {"model": "local/sketch", "prompt": "p" * 8001},
            openai.BadRequestError,
            "PROMPT_TOO_LONG",
            "prompt",
        ),
        (
            {"model": "local/sketch", "prompt": "x", "user": "u" * 257},
            openai.BadRequestError,
            "BAD_REQUEST",
            "user",
        ),
        (
            {"model": "local/sketch", "prompt": "x", "style": "loud"},
            openai.BadRequestError,
            "INVALID_VALUE",
            "style",
        ),
        (
            {"model": "local/sketch", "prompt": "x", "response_format": "jpeg"},
            openai.BadRequestError,
            "INVALID_VALUE",
            "response_format",
        ),
        (
            {"model": "local/sketch", "prompt": "x", "quality": "ultra"},
            openai.BadRequestError,
            "UNSUPPORTED_QUALITY",
            "quality",
        ),
    ],
)
def test_invalid_requests_get_the_right_error(
    client: openai.OpenAI,
    kwargs: dict[str, Any],
    exception: type[openai.APIStatusError],
    code: str,
    param: str,
) -> None:
    with pytest.raises(exception) as caught:
        client.images.generate(**kwargs)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == code and error["param"] == param
    assert caught.value.response.headers.get("x-request-id")


def test_prompt_of_exactly_the_limit_is_accepted(gateway: GatewayProcess) -> None:
    assert (
        generate_raw(gateway, {"model": "local/sketch", "prompt": "p" * 8000, "size": "256x256"}).status_code
        == 200
    )


def test_reference_image_to_a_model_without_edit_is_forbidden(gateway: GatewayProcess) -> None:
    body = {"model": "stability/stable-image-core", "prompt": "x", "reference_image": "aGVsbG8="}
    response = generate_raw(gateway, body)
    assert_error(response, 403, "MODEL_NOT_ALLOWED", "reference_image")


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"model": "local/sketch", "prompt": "x", "n": "two"}',
        b'{"model": 5, "prompt": ["x"]}',
        b"[]",
        # not UTF-8: the transcoder's error quotes these bytes, and the envelope must stay readable
        b'{"model": "local/sketch", "prompt": "caf\xe9"}',  # Latin-1
        b'\xff\xfe{"model": "local/sketch"}',
        b'{"prompt": "\xe2\x82"}',  # a sequence cut short
        b'{"prompt": "\xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80"}',  # surrogate, overlong, past U+10FFFF
    ],
)
def test_malformed_bodies_get_a_400_envelope(
    gateway: GatewayProcess, raw: bytes, openai_schema: dict[str, object]
) -> None:
    response = httpx.post(
        f"{gateway.http_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
        content=raw,
    )
    assert_error(response, 400, "BAD_REQUEST")
    validate(response.json(), openai_schema, "ErrorResponse")


def test_head_requests_are_answered_without_a_body(gateway: GatewayProcess) -> None:
    """HEAD is answered with the headers alone: body bytes after them would be read as the start of
    the next response on the same connection (found by fuzzing: the error envelope was sent)."""
    headers = {"Authorization": f"Bearer {gateway.key}"}
    with httpx.Client(base_url=gateway.http_url, headers=headers) as client:
        for path in ("/v1/models", "/v1/images/generations", "/v1/files/img_x", "/nowhere"):
            head = client.head(path)
            assert head.status_code >= 400 and head.headers["content-type"] == "application/json"
            assert head.content == b""
            # the same kept-alive connection still parses the next answer
            assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize("authorization", [None, "", "Basic abc", "Token abc", "Bearer"])
def test_missing_or_malformed_authorization_is_401(
    gateway: GatewayProcess, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.post(
        f"{gateway.http_url}/v1/images/generations",
        headers=headers,
        json={"model": "local/sketch", "prompt": "x"},
    )
    assert_error(response, 401, "UNAUTHENTICATED")
    assert httpx.get(f"{gateway.http_url}/v1/models", headers=headers).status_code == 401


def test_sdk_sees_authentication_error_for_no_key(gateway: GatewayProcess) -> None:
    # The SDK always sends a bearer; strip it to see the gateway's answer through the SDK's error types.
    client = openai_client(
        f"{gateway.http_url}/v1",
        "unused",
        http_client=httpx.Client(event_hooks={"request": [lambda r: r.headers.pop("Authorization")]}),
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(model="local/sketch", prompt="x")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "UNAUTHENTICATED"


def test_a_provider_without_credentials_is_a_clear_404_the_sdk_does_not_retry(
    gateway: GatewayProcess,
) -> None:
    response = generate_raw(gateway, {"model": "openai/dall-e-3", "prompt": "x"})
    error = assert_error(response, 404, "PROVIDER_NOT_CONFIGURED", "model")
    assert "OPENAI_API_KEY" in error["message"]
    sent: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [sent.append]}) as http:
        sdk = openai_client(f"{gateway.http_url}/v1", gateway.key, max_retries=2, http_client=http)
        with pytest.raises(openai.NotFoundError):
            sdk.images.generate(model="openai/dall-e-3", prompt="x")
    assert len(sent) == 1  # a 5xx would have been sent three times


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nothing-here"), ("GET", "/v1/images/edits?x=1")])
def test_unknown_route_is_a_404_envelope_in_plain_words(
    gateway: GatewayProcess, method: str, path: str
) -> None:
    headers = {"Authorization": f"Bearer {gateway.key}"}  # without one, the edge answers 401 first
    response = httpx.request(method, f"{gateway.http_url}{path}", headers=headers)
    error = assert_error(response, 404, "NOT_FOUND")
    assert error["message"].startswith(
        f"Unknown route: {method} {path.partition('?')[0]} is not part of this API."
    )
    assert "/v1/images/edits" in error["message"] and "resolve" not in error["message"]


def test_unknown_file_is_a_404_envelope(gateway: GatewayProcess) -> None:
    assert_error(httpx.get(f"{gateway.http_url}/v1/files/file_123"), 404, "NOT_FOUND", "id")


def printed_try_it(gateway: GatewayProcess) -> str:
    """The curl line `mg serve` printed at start, as a shell command."""
    output = "".join(gateway.output)
    block = output[output.index("Try it:\n") + len("Try it:\n") :]
    lines = []
    for line in block.splitlines():
        lines.append(line.strip())
        if not line.rstrip().endswith("\\"):
            break
    return "\n".join(lines)


def test_the_printed_curl_line_saves_an_image(gateway: GatewayProcess, tmp_path: Path) -> None:
    command = printed_try_it(gateway)
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "saved image.png" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "image.png").read_bytes().startswith(b"\x89PNG")


def test_the_printed_curl_line_shows_the_error_envelope(gateway: GatewayProcess, tmp_path: Path) -> None:
    command = printed_try_it(gateway).replace('"size": "512x512"', '"size": "640x480"')
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert '"code":"UNSUPPORTED_SIZE"' in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "image.png").exists()


def test_the_dev_project_has_a_small_cap_and_says_so(gateway: GatewayProcess) -> None:
    output = "".join(gateway.output)
    assert "Project:                  dev (spend cap $5; change it: " in output
    assert "/mg projects update dev --budget-usd N" in output  # mg by its real path
    shown = gateway.project("dev")
    assert shown["budget_usd"] == 5.0
