"""The REST upload reader: multipart and JSON bodies into EditImagesRequest / CreateImageVariationsRequest."""

from __future__ import annotations

import httpx
import pytest
from google.api import httpbody_pb2
from google.protobuf import json_format
from mg.v1 import image_generation_pb2 as pb

from service.api.uploads import edit_reader, variation_reader
from service.errors import BadRequest, RequestTooLarge


def multipart(data: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]) -> bytes:
    """The HttpBody the transcoder hands over for a form httpx (the OpenAI SDK's client) encodes."""
    # (httpx encodes a form without files as urlencoded: a part no field has keeps it multipart)
    files = files or [("unused", ("u.bin", b"", "application/octet-stream"))]
    request = httpx.Request("POST", "http://x/v1/images/edits", data=data, files=files)
    body = httpbody_pb2.HttpBody(content_type=request.headers["content-type"], data=request.read())
    return bytes(body.SerializeToString())


def json_body(text: str) -> bytes:
    body = httpbody_pb2.HttpBody(content_type="application/json; charset=utf-8", data=text.encode())
    return bytes(body.SerializeToString())


def test_a_form_becomes_the_typed_request() -> None:
    body = multipart(
        {"model": "local/canvas", "prompt": "p", "n": "2", "stream": "false", "input_fidelity": "high",
         "output_compression": "80", "providerOptions": '{"local": {"seed": 7}}'},
        [("image[]", ("a.png", b"A", "image/png")), ("image[]", ("b.png", b"B", "image/png")),
         ("mask", ("m.png", b"M", "image/png")), ("unknown", ("u.bin", b"U", "application/octet-stream"))],
    )  # fmt: skip
    request = edit_reader(1024)(body)
    assert [image.data for image in request.images] == [b"A", b"B"] and request.mask.data == b"M"
    assert (request.model, request.prompt, request.n, request.stream) == ("local/canvas", "p", 2, False)
    assert (request.input_fidelity, request.output_compression) == ("high", 80)
    assert json_format.MessageToDict(request.provider_options) == {"local": {"seed": 7}}


def test_a_text_part_for_an_image_is_its_url() -> None:
    body = multipart({"model": "m", "image": "https://example.com/a.png"}, [])
    assert edit_reader(1024)(body).images == [pb.InputImage(image_url="https://example.com/a.png")]


def test_json_takes_image_urls() -> None:
    request = edit_reader(1024)(
        json_body(
            '{"model": "m", "prompt": "p", "images": [{"image_url": "data:x"}], "mask": {"image_url": "u"}}'
        )
    )
    assert [image.image_url for image in request.images] == ["data:x"] and request.mask.image_url == "u"


def test_a_variation_form() -> None:
    body = multipart(
        {"model": "openai/dall-e-2", "size": "256x256"}, [("image", ("a.png", b"A", "image/png"))]
    )
    request = variation_reader(1024)(body)
    assert (request.model, request.size, request.image.data) == ("openai/dall-e-2", "256x256", b"A")


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({"n": "2.5"}, [], "n"),
        ({"stream": "yes"}, [], "stream"),
        ({"providerOptions": "[1]"}, [], "providerOptions"),
        ({}, [("mask", ("m.png", b"M", "image/png")), ("mask", ("m.png", b"M", "image/png"))], "mask"),
        ({"prompt": "x"}, [("prompt", ("p.bin", b"\xff\xfe", "application/octet-stream"))], "prompt"),
    ],
)
def test_fields_that_do_not_read_are_400s_naming_them(
    data: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        edit_reader(1024)(multipart(data, files))
    assert caught.value.param == param


def test_parts_are_capped() -> None:
    with pytest.raises(RequestTooLarge) as caught:
        edit_reader(1024)(multipart({}, [("image", ("a.png", b"x" * 1025, "image/png"))]))
    assert caught.value.param == "image"
    with pytest.raises(RequestTooLarge):
        edit_reader(1024)(multipart({"prompt": "x" * (64 * 1024 + 1)}, []))
    with pytest.raises(BadRequest, match="more than 64 parts"):
        edit_reader(1024)(multipart({f"f{i}": "v" for i in range(65)}, []))
