"""Every row of the error table (DESIGN.md section 2), through real Envoy and over plain gRPC."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc

from service import errors
from tests.support.checks import assert_error, validate
from tests.support.edge import running_envoy
from tests.support.ports import free_port

# error -> (HTTP status, code, type, gRPC status): the contract, written out rather than derived
TABLE = [
    (errors.BadRequest, 400, "BAD_REQUEST", "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, 401, "UNAUTHENTICATED", "authentication_error", grpc.StatusCode.UNAUTHENTICATED),
    (errors.BudgetExceeded, 402, "BUDGET_EXCEEDED", "insufficient_quota", grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ModelNotAllowed, 403, "MODEL_NOT_ALLOWED", "permission_error", grpc.StatusCode.PERMISSION_DENIED),
    (errors.Forbidden, 403, "FORBIDDEN", "permission_error", grpc.StatusCode.PERMISSION_DENIED),
    (errors.ModelNotFound, 404, "MODEL_NOT_FOUND", "invalid_request_error", grpc.StatusCode.NOT_FOUND),
    (errors.NotFound, 404, "NOT_FOUND", "invalid_request_error", grpc.StatusCode.NOT_FOUND),
    (
        errors.IdempotencyKeyReused,
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "invalid_request_error",
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    (
        errors.RequestTooLarge,
        413,
        "REQUEST_TOO_LARGE",
        "invalid_request_error",
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (errors.RateLimited, 429, "RATE_LIMITED", "rate_limit_error", grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UpstreamError, 502, "UPSTREAM_ERROR", "server_error", grpc.StatusCode.UNAVAILABLE),
    (
        errors.ContentPolicyViolation,
        400,
        "CONTENT_POLICY_VIOLATION",
        "invalid_request_error",
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (errors.Unavailable, 503, "UNAVAILABLE", "server_error", grpc.StatusCode.UNAVAILABLE),
    (
        errors.InsufficientStorage,
        507,
        "INSUFFICIENT_STORAGE",
        "server_error",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    (errors.UpstreamTimeout, 504, "UPSTREAM_TIMEOUT", "server_error", grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Internal, 500, "INTERNAL", "server_error", grpc.StatusCode.INTERNAL),
    # the sharper codes
    (errors.InvalidValue, 400, "INVALID_VALUE", "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT),
    (errors.PromptTooLong, 400, "PROMPT_TOO_LONG", "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidSize, 400, "INVALID_SIZE", "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT),
    (
        errors.UnsupportedSize,
        400,
        "UNSUPPORTED_SIZE",
        "invalid_request_error",
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        errors.UnsupportedQuality,
        400,
        "UNSUPPORTED_QUALITY",
        "invalid_request_error",
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        errors.InvalidReferenceImage,
        400,
        "INVALID_REFERENCE_IMAGE",
        "invalid_request_error",
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (errors.InvalidMask, 400, "INVALID_MASK", "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT),
    (
        errors.EditNotSupported,
        400,
        "EDIT_NOT_SUPPORTED",
        "invalid_request_error",
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        errors.ProviderRejectedRequest,
        400,
        "PROVIDER_REJECTED_REQUEST",
        "invalid_request_error",
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        errors.UpstreamRateLimited,
        429,
        "UPSTREAM_RATE_LIMITED",
        "rate_limit_error",
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    (
        errors.ProviderNotConfigured,
        404,
        "PROVIDER_NOT_CONFIGURED",
        "invalid_request_error",
        grpc.StatusCode.NOT_FOUND,
    ),
]


# The edge refuses a call without a key before the server sees it; the fake server takes any key.
KEY = {"Authorization": "Bearer mg_live_error-table"}


def test_the_table_covers_every_domain_error() -> None:
    assert {row[0] for row in TABLE} == set(errors.ALL_ERRORS)


@pytest.fixture(scope="module")
def error_server() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.error_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline().strip() == "serving"
        yield port
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def edge(error_server: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_envoy(error_server, tmp_path_factory.mktemp("edge"), max_duration_s=0.5) as url:
        yield url


@pytest.mark.parametrize(
    ("error", "status", "code", "type_", "grpc_code"), TABLE, ids=lambda v: getattr(v, "__name__", None)
)
def test_rest_callers_get_the_envelope_and_status(
    edge: str,
    openai_schema: dict[str, object],
    error: type,
    status: int,
    code: str,
    type_: str,
    grpc_code: grpc.StatusCode,
) -> None:
    response = httpx.post(
        f"{edge}/v1/images/generations",
        json={"model": "m", "prompt": error.__name__, "user": "size"},
        headers=KEY,
    )
    body = assert_error(response, status, code, param="size")
    assert body["type"] == type_
    assert body["message"] == f"simulated {error.__name__} for the error table"
    validate(response.json(), openai_schema, "ErrorResponse")
    plumbing = {"x-http-status", "x-mg-error", "grpc-status", "grpc-message", "grpc-status-details-bin"}
    assert plumbing.isdisjoint(response.headers)
    if error is errors.RateLimited:
        assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("error", "status", "code", "type_", "grpc_code"), TABLE, ids=lambda v: getattr(v, "__name__", None)
)
def test_grpc_callers_get_the_status_and_error_info(
    error_server: int, error: type, status: int, code: str, type_: str, grpc_code: grpc.StatusCode
) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{error_server}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        pb_grpc.ImageGenerationStub(channel).GenerateImages(pb.GenerateImagesRequest(prompt=error.__name__))
    call = caught.value
    assert call.code() == grpc_code
    status_proto = rpc_status.from_call(cast(grpc.Call, call))
    assert status_proto is not None
    info = error_details_pb2.ErrorInfo()
    assert status_proto.details[0].Unpack(info)
    assert (info.reason, info.domain) == (code, "mg")
    assert info.metadata["http_status"] == str(status)
    if error is errors.RateLimited:
        retry = error_details_pb2.RetryInfo()
        assert status_proto.details[1].Unpack(retry) and retry.retry_delay.seconds == 7


def test_native_grpc_through_envoy_is_left_alone(edge: str, error_server: int) -> None:
    with (
        grpc.insecure_channel(edge.removeprefix("http://")) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        request = pb.GenerateImagesRequest(prompt="BudgetExceeded")
        key = [("authorization", KEY["Authorization"])]
        pb_grpc.ImageGenerationStub(channel).GenerateImages(request, metadata=key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_envoys_own_timeout_is_an_envelope(edge: str) -> None:
    # The edge is rendered for a 0.5 s max duration: its backstop fires 5 s later, before the sleep ends.
    response = httpx.post(
        f"{edge}/v1/images/generations", json={"model": "m", "prompt": "sleep:20"}, headers=KEY, timeout=30
    )
    assert_error(response, 504, "UPSTREAM_TIMEOUT")


def test_backend_down_is_a_503_envelope(tmp_path: Path, openai_schema: dict[str, object]) -> None:
    with running_envoy(free_port(), tmp_path) as url:  # nothing listens on that gRPC port
        response = httpx.post(
            f"{url}/v1/images/generations", json={"model": "local/sketch", "prompt": "x"}, headers=KEY
        )
        assert_error(response, 503, "UNAVAILABLE")
        validate(response.json(), openai_schema, "ErrorResponse")
        assert_error(httpx.get(f"{url}/v1/models", headers=KEY), 503, "UNAVAILABLE")
