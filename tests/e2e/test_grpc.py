"""Internal callers: the gRPC API directly, as generated stubs see it."""

from __future__ import annotations

from typing import cast

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from tests.support.checks import decode_png
from tests.support.gateway import GatewayProcess


def auth(gateway: GatewayProcess) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {gateway.key}"),)


def test_generate_returns_raw_png_bytes(
    grpc_stub: pb_grpc.ImageGenerationStub, gateway: GatewayProcess
) -> None:
    request = pb.GenerateImagesRequest(model="local/sketch", prompt="a tram at night", size="512x512", n=2)
    response, call = grpc_stub.GenerateImages.with_call(request, metadata=auth(gateway), timeout=30)
    assert len(response.data) == 2
    for image in response.data:
        assert image.b64_json.startswith(b"\x89PNG\r\n\x1a\n")  # raw bytes, not base64
        assert decode_png(image.b64_json).size == (512, 512)
    assert response.usage.output_images == 2
    assert response.id.startswith("img_")
    assert dict(call.initial_metadata())["x-request-id"]


def test_errors_carry_error_info(grpc_stub: pb_grpc.ImageGenerationStub, gateway: GatewayProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub.GenerateImages(pb.GenerateImagesRequest(model="nope/x", prompt="x"), metadata=auth(gateway))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(cast(grpc.Call, caught.value))
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "MODEL_NOT_FOUND" and info.domain == "mg" and info.metadata["param"] == "model"


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("/mg.v1.ImageGeneration/GenerateImages", b"\x0a\x0clocal/sketch\x12\x03caf\xe9"),  # Latin-1 prompt
        ("/mg.v1.ImageGeneration/GenerateImages", b"\x12\x05ab"),  # a field cut short
        ("/mg.v1.ImageGeneration/ListModels", b"\xff\xff\xff"),
        ("/mg.v1.Operations/Readiness", b"\x0a"),
    ],
)
def test_request_bytes_that_do_not_parse_are_invalid_argument(
    gateway: GatewayProcess, method: str, raw: bytes
) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as caught:
            call(raw, metadata=auth(gateway), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert (caught.value.details() or "").startswith("The request is not a valid protobuf message")
    status = rpc_status.from_call(cast(grpc.Call, caught.value))
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "BAD_REQUEST" and info.domain == "mg"


def test_calls_without_a_bearer_are_unauthenticated(grpc_stub: pb_grpc.ImageGenerationStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub.ListModels(pb.ListModelsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_short_caller_deadline_is_honoured(
    grpc_stub: pb_grpc.ImageGenerationStub, gateway: GatewayProcess
) -> None:
    request = pb.GenerateImagesRequest(model="local/sketch", prompt="slow", size="256x256")
    request.provider_options.update({"local": {"delay_ms": 5000}})
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub.GenerateImages(request, metadata=auth(gateway), timeout=1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_checking_reports_serving(gateway: GatewayProcess) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "mg.v1.ImageGeneration"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)  # type: ignore[attr-defined]
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
