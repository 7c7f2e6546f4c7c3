"""Assertions shared by tests that look at gateway responses."""

from __future__ import annotations

import io
from typing import Any

import httpx
import jsonschema
from PIL import Image


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def validate(document: Any, schema: dict[str, object], definition: str) -> None:
    jsonschema.validate(document, {**schema, "$ref": f"#/$defs/{definition}"})


def assert_error(
    response: httpx.Response, status: int, code: str, param: str | None = None
) -> dict[str, Any]:
    """The response is the OpenAI error envelope with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-request-id")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "type", "param"}, error
    assert error["code"] == code, error
    assert error["param"] == param, error
    assert isinstance(error["message"], str) and error["message"]
    return error
