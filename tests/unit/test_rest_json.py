"""The worker's REST JSON (service/api/rest_json.py) must be exactly the proto3 JSON mapping the transcoder
applied before: held to protobuf's own json_format, message by message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.api import httpbody_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service.api.rest_json import as_http_body, message_to_json
from service.api.servicer import add_image_generation

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3


def expected(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


MESSAGES = [
    pb.ImagesResponse(),
    pb.ImagesResponse(
        id="img_01J",
        created=1_700_000_000,
        model="openai/gpt-image-1",
        data=[
            pb.Image(b64_json=PNG, revised_prompt='a "fox"\n in snow — ünïcode ✓ \u2028'),
            pb.Image(b64_json=b"\x00"),
            pb.Image(url="https://gw.example/v1/files/f?exp=1&sig=a+b/c"),
            pb.Image(revised_prompt=""),  # optional, set to "": printed
        ],
        usage=pb.Usage(
            input_tokens=0,  # optional at zero: printed
            output_tokens=4160,
            total_tokens=4_294_967_295,
            input_tokens_details=pb.InputTokensDetails(text_tokens=7),
            output_images=2,
        ),
        size="1024x1024",
        quality="",
        background="transparent",
    ),
    pb.ImagesResponse(created=1, usage=pb.Usage()),  # an empty nested message is printed as {}
    pb.ListModelsResponse(
        object="list",
        data=[
            pb.Model(
                id="local/sketch",
                capabilities=pb.ModelCapabilities(
                    sizes=["256x256", "512x512"],
                    size_rule=pb.SizeRule(max_width=2048, multiple_of=16),
                    reference_image=False,
                    qualities=[],
                ),
                price=pb.ModelPrice(
                    per_image_micros={"default": 40_000, "hd@1024x1792": 120_000, "zero": 0},
                    per_million_tokens_micros=pb.TokenPrices(output=40_000_000),
                ),
                available=False,
                aliases=["sketch", "fast"],
            )
        ],
    ),
    pb.HealthStatus(status="ready", checks={"store": "ok", "": "x"}),
    health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING),  # an enum
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_json_is_protobufs_own_mapping(message: Message) -> None:
    assert json.loads(message_to_json(message)) == expected(message)


def test_key_order_follows_field_numbers_as_the_transcoder_prints_them() -> None:
    response = pb.ImagesResponse(output_format="png", id="img_1", created=3, model="m")
    assert list(json.loads(message_to_json(response))) == ["id", "created", "model", "output_format"]


def test_bytes_are_standard_padded_base64() -> None:
    body = json.loads(message_to_json(pb.Image(b64_json=b"\xfb\xff\xfe\x01")))
    assert body == {"b64_json": "+//+AQ=="}


@pytest.mark.parametrize(
    "message",
    [
        pb.GenerateImagesRequest(provider_options={"openai": {"background": "transparent"}}),  # Struct
    ],
)
def test_types_with_their_own_mapping_are_refused_not_misprinted(message: Message) -> None:
    with pytest.raises(TypeError):
        message_to_json(message)


@pytest.mark.parametrize("image_bytes", [0, 50, 200, 20_000, 3_000_000])  # 1- to 4-byte length varints
def test_http_body_is_what_protobuf_would_serialize(image_bytes: int) -> None:
    response = pb.ImagesResponse(id="img_1", data=[pb.Image(b64_json=PNG[:8] + bytes(image_bytes))])
    wire = as_http_body(response)
    want = httpbody_pb2.HttpBody(content_type="application/json", data=message_to_json(response))
    assert wire == want.SerializeToString()
    assert json.loads(httpbody_pb2.HttpBody.FromString(wire).data) == expected(response)


class _RecordingServer:
    def __init__(self) -> None:
        self.methods: dict[str, set[str]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.methods[service] = set(handlers)


def test_every_rpc_of_the_service_is_registered() -> None:
    server = _RecordingServer()
    add_image_generation(pb_grpc.ImageGenerationServicer(), server, 1 << 20)  # type: ignore[arg-type]
    service = pb.DESCRIPTOR.services_by_name["ImageGeneration"]
    assert server.methods == {service.full_name: {method.name for method in service.methods}}
