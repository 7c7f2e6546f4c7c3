"""Streamed generations (`stream: true`) through Envoy, as the official SDKs read them: partial images
as they render, then the completed event; errors before the first event as the usual envelope."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import openai
import pytest
from mg.v1 import image_generation_pb2 as pb
from mg.v1 import image_generation_pb2_grpc as pb_grpc
from PIL import Image
from ulid import ULID

from tests.fakes import environment
from tests.fakes.base import FakeProvider
from tests.fakes.openai import FakeOpenAI
from tests.support.checks import assert_error, decode_png, validate
from tests.support.gateway import GatewayProcess
from tests.support.sdk import openai_client

PARTIAL = "image_generation.partial_image"
COMPLETED = "image_generation.completed"
STREAMED = {"model": "local/sketch", "prompt": "a lighthouse, streamed", "size": "256x256", "stream": True}


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event of a streamed response."""
    events = []
    for frame in response.text.split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def new_project(gateway: GatewayProcess) -> tuple[str, str]:
    name = f"stream-{ULID()}"
    return name, gateway.new_key(name)


def test_python_sdk_yields_partial_images_then_the_completed_one(gateway: GatewayProcess) -> None:
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    stream = client.images.generate(
        model="local/sketch", prompt="a lighthouse, streamed", size="256x256", stream=True, partial_images=2
    )
    events = list(stream)
    assert [event.type for event in events] == [PARTIAL, PARTIAL, COMPLETED]
    partials, completed = events[:2], events[2]
    assert [event.partial_image_index for event in partials] == [0, 1]  # type: ignore[union-attr]
    pictures = [base64.b64decode(event.b64_json) for event in events]
    assert all(decode_png(picture).size == (256, 256) for picture in pictures)
    assert len(set(pictures)) == 3  # coarser renders first, then the image itself
    assert completed.usage.input_tokens > 0  # type: ignore[union-attr]
    # The completed image is the one the same request makes unstreamed.
    plain = client.images.generate(model="local/sketch", prompt="a lighthouse, streamed", size="256x256")
    assert plain.data is not None and base64.b64decode(plain.data[0].b64_json or "") == pictures[2]


def test_async_python_sdk_streams_too(gateway: GatewayProcess) -> None:
    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.http_url}/v1", api_key=gateway.key, max_retries=0, timeout=60
        ) as client:
            stream = await client.images.generate(
                model="local/sketch", prompt="async", size="256x256", stream=True, partial_images=2
            )
            return [event async for event in stream]

    events = asyncio.run(run())
    assert [event.type for event in events] == [PARTIAL, PARTIAL, COMPLETED]


def test_events_are_sse_frames_that_validate_against_the_official_schema(
    gateway: GatewayProcess, openai_schema: dict[str, object]
) -> None:
    response = gateway.generate({**STREAMED, "partial_images": 1})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-request-id"]
    events = sse_events(response)
    assert [name for name, _ in events] == [PARTIAL, COMPLETED]
    for name, data in events:
        assert data["type"] == name
        validate(data, openai_schema, "ImageGenStreamEvent")
    partial, completed = events[0][1], events[1][1]
    validate(partial, openai_schema, "ImageGenPartialImageEvent")
    validate(completed, openai_schema, "ImageGenCompletedEvent")
    assert partial["partial_image_index"] == 0
    assert partial["size"] == "auto"  # 256x256 is not a value the event schema allows
    assert completed["usage"]["output_images"] == 1


def test_without_partial_images_the_stream_holds_the_completed_event(gateway: GatewayProcess) -> None:
    events = sse_events(gateway.generate(STREAMED))
    assert [name for name, _ in events] == [COMPLETED]


def test_a_streamed_url_answer_carries_the_hosted_url_in_the_completed_event(gateway: GatewayProcess) -> None:
    events = sse_events(gateway.generate({**STREAMED, "response_format": "url", "partial_images": 1}))
    assert [name for name, _ in events] == [PARTIAL, COMPLETED]
    completed = events[1][1]
    assert "b64_json" not in completed and completed["url"].startswith(gateway.http_url + "/v1/files/")
    assert decode_png(httpx.get(completed["url"], timeout=10).content).size == (256, 256)


def test_partial_images_come_before_the_generation_ends(gateway: GatewayProcess) -> None:
    body = {**STREAMED, "partial_images": 1, "providerOptions": {"local": {"delay_ms": 1500}}}
    started = time.monotonic()
    arrivals = []
    with httpx.stream(
        "POST",
        f"{gateway.http_url}/v1/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                arrivals.append((line.removeprefix("event: "), time.monotonic() - started))
    assert [name for name, _ in arrivals] == [PARTIAL, COMPLETED]
    assert arrivals[1][1] - arrivals[0][1] > 0.5  # the partial image did not wait for the final one


def test_errors_before_the_first_event_are_the_usual_envelope(gateway: GatewayProcess) -> None:
    assert_error(gateway.generate({**STREAMED, "model": "nope/x"}), 404, "MODEL_NOT_FOUND", "model")
    assert_error(gateway.generate({**STREAMED, "n": 9}), 400, "BAD_REQUEST", "n")
    assert_error(gateway.generate({**STREAMED, "partial_images": 4}), 400, "BAD_REQUEST", "partial_images")
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    with pytest.raises(openai.NotFoundError):
        list(client.images.generate(model="nope/x", prompt="x", stream=True))


def test_a_stream_of_several_images_holds_each_images_events(gateway: GatewayProcess) -> None:
    # OpenAI's schema takes `n` (1-10) with `stream`; its events carry no image position, so each
    # image's partial images and completed event come as that image is made.
    name, key = new_project(gateway)
    events = sse_events(gateway.generate({**STREAMED, "n": 2, "partial_images": 1}, key))
    names = [event for event, _ in events]
    assert sorted(names) == sorted([PARTIAL, PARTIAL, COMPLETED, COMPLETED]) and names[-1] == COMPLETED
    completed = [data for event, data in events if event == COMPLETED]
    pictures = {base64.b64decode(data["b64_json"]) for data in completed}
    assert len(pictures) == 2 and all(data["usage"]["output_images"] == 2 for data in completed)
    assert settled(gateway, name) == [(1, 2, 2000)]  # two images, one request; partials are free
    client = openai_client(f"{gateway.http_url}/v1", key)
    stream = client.images.generate(
        model="local/sketch", prompt="two, streamed", size="256x256", n=2, stream=True, partial_images=1
    )
    assert sorted(event.type for event in stream) == sorted([PARTIAL, PARTIAL, COMPLETED, COMPLETED])


def test_grpc_callers_get_the_same_events(
    grpc_stub: pb_grpc.ImageGenerationStub, gateway: GatewayProcess
) -> None:
    request = pb.GenerateImagesRequest(model="local/sketch", prompt="grpc", size="256x256", partial_images=2)
    metadata = (("authorization", f"Bearer {gateway.key}"),)
    events = list(grpc_stub.GenerateImagesStream(request, metadata=metadata, timeout=30))
    assert [event.type for event in events] == [PARTIAL, PARTIAL, COMPLETED]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    assert events[2].usage.output_images == 1 and decode_png(events[2].b64_json).size == (256, 256)
    with pytest.raises(grpc.RpcError) as refused:
        list(
            grpc_stub.GenerateImagesStream(
                pb.GenerateImagesRequest(model="nope/x", prompt="x"), metadata=metadata
            )
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_stream_true_on_the_unary_grpc_method_is_a_clear_400(
    grpc_stub: pb_grpc.ImageGenerationStub, gateway: GatewayProcess
) -> None:
    request = pb.GenerateImagesRequest(model="local/sketch", prompt="x", size="256x256", stream=True)
    with pytest.raises(grpc.RpcError) as refused:
        grpc_stub.GenerateImages(request, metadata=(("authorization", f"Bearer {gateway.key}"),))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "GenerateImagesStream" in (refused.value.details() or "")


# --- money, idempotency and errors once the stream is under way


def slow_stream(delay_ms: int, partial_images: int, prompt: str = "slow stream") -> dict[str, Any]:
    return {
        **STREAMED,
        "prompt": prompt,
        "partial_images": partial_images,
        "providerOptions": {"local": {"delay_ms": delay_ms}},
    }


def read_first_event_and_leave(
    gateway: GatewayProcess, body: dict[str, Any], key: str, **headers: str
) -> str:
    """Stream `body`, and hang up once the first event has arrived; returns its name."""
    with httpx.stream(
        "POST",
        f"{gateway.http_url}/v1/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                return line.removeprefix("event: ")
    raise AssertionError("no event")


def settled(gateway: GatewayProcess, project: str, timeout_s: float = 15) -> list[tuple[int, int, int]]:
    """The project's ledger (requests, images, cost) once nothing is reserved any more."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = gateway.project(project)
        rows = gateway.usage(project)
        if (rows and shown["reserved_usd"] == 0) or time.monotonic() > deadline:
            return [(r["requests"], r["images"], r["cost_micros"]) for r in rows]
        time.sleep(0.2)


def test_a_caller_that_leaves_mid_stream_is_charged_for_the_image(gateway: GatewayProcess) -> None:
    name, key = new_project(gateway)
    assert read_first_event_and_leave(gateway, slow_stream(1500, 2), key) == PARTIAL
    # The image was being made for the caller: it completes in the background and is charged once
    # (partial images never are).
    assert settled(gateway, name) == [(1, 1, 1000)]


def test_a_streamed_request_replays_as_a_stream_holding_the_completed_event(gateway: GatewayProcess) -> None:
    name, key = new_project(gateway)
    body = {**STREAMED, "prompt": "replayed", "partial_images": 2}
    first = gateway.generate(body, key, headers={"Idempotency-Key": "stream-1"})
    again = gateway.generate(body, key, headers={"Idempotency-Key": "stream-1"})
    assert [name for name, _ in sse_events(first)] == [PARTIAL, PARTIAL, COMPLETED]
    assert again.headers["content-type"] == "text/event-stream"
    assert again.headers["x-mg-idempotent-replay"] == "true"
    assert sse_events(again) == sse_events(first)[2:]  # the same completed event, no partial images
    assert settled(gateway, name) == [(1, 1, 1000)]


def test_a_retry_after_leaving_mid_stream_gets_the_result_charged_once(gateway: GatewayProcess) -> None:
    name, key = new_project(gateway)
    body = slow_stream(1500, 2, prompt="left, then retried")
    assert read_first_event_and_leave(gateway, body, key, **{"Idempotency-Key": "stream-2"}) == PARTIAL
    retry = gateway.generate(body, key, headers={"Idempotency-Key": "stream-2"})  # joins the running one
    assert retry.headers["x-mg-idempotent-replay"] == "true"
    events = sse_events(retry)
    assert [name for name, _ in events] == [COMPLETED]
    assert decode_png(base64.b64decode(events[0][1]["b64_json"])).size == (256, 256)
    assert settled(gateway, name) == [(1, 1, 1000)]


@pytest.fixture(scope="module")
def short_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("short-stream"), {"MG_MAX_DURATION_S": "2"}).start()
    yield process
    process.stop()


def test_an_error_after_the_first_event_is_an_error_event(short_gateway: GatewayProcess) -> None:
    gateway = short_gateway
    name, key = new_project(gateway)
    # The first partial image comes at 1 s, the image at 4 s: past the 2 s max duration.
    body = slow_stream(4000, 3, prompt="too slow")
    response = gateway.generate(body, key)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[0][0] == PARTIAL and events[-1][0] == "error"
    error = events[-1][1]
    assert error["type"] == "error" and error["error"]["code"] == "UPSTREAM_TIMEOUT"
    assert set(error["error"]) == {"code", "message", "type", "param"}
    # The SDK raises it, with the envelope's fields.
    client = openai_client(f"{gateway.http_url}/v1", key)
    stream = client.images.generate(
        model="local/sketch",
        prompt="too slow, SDK",
        size="256x256",
        stream=True,
        partial_images=3,
        extra_body={"providerOptions": {"local": {"delay_ms": 4000}}},
    )
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "UPSTREAM_TIMEOUT"
    # Both images were made after their callers' deadline: completed in the background, charged.
    assert settled(gateway, name) == [(2, 2, 2000)]


def test_grpc_callers_get_an_error_after_the_first_event_as_the_status(short_gateway: GatewayProcess) -> None:
    request = pb.GenerateImagesRequest(
        model="local/sketch", prompt="too slow, gRPC", size="256x256", partial_images=3
    )
    request.provider_options.update({"local": {"delay_ms": 4000}})
    received = []
    with grpc.insecure_channel(short_gateway.grpc_target) as channel:
        stub = pb_grpc.ImageGenerationStub(channel)
        call = stub.GenerateImagesStream(
            request, metadata=(("authorization", f"Bearer {short_gateway.key}"),)
        )
        with pytest.raises(grpc.RpcError) as caught:
            for event in call:
                received.append(event.type)
    assert received and received[0] == PARTIAL
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# --- providers: OpenAI's GPT image models stream through; the others send the completed event only


@pytest.fixture(scope="module")
def openai_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, FakeProvider]]:
    with FakeOpenAI().running() as fake:
        gateway = GatewayProcess(tmp_path_factory.mktemp("stream-openai"), environment(fake)).start()
        try:
            yield gateway, fake
        finally:
            gateway.stop()


def test_openai_partial_images_are_streamed_through_as_they_arrive(
    openai_stack: tuple[GatewayProcess, FakeProvider],
) -> None:
    gateway, fake = openai_stack
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    started = time.monotonic()
    arrivals = []
    stream = client.images.generate(
        model="openai/gpt-image-1",
        prompt="SLOWSTREAM a harbour",
        stream=True,
        partial_images=2,
        quality="low",
    )
    for event in stream:
        arrivals.append((event, time.monotonic() - started))
    events = [event for event, _ in arrivals]
    assert [event.type for event in events] == [PARTIAL, PARTIAL, COMPLETED]
    # The fake pauses 0.5 s before each event: each reached the caller when the provider sent it.
    assert arrivals[1][1] - arrivals[0][1] > 0.3 and arrivals[2][1] - arrivals[1][1] > 0.3
    assert [base64.b64decode(event.b64_json) for event in events[:2]] != [b"", b""]
    completed = events[2]
    assert completed.usage.output_tokens == 4160 and completed.quality == "low"  # type: ignore[union-attr]
    sent = fake.generation_requests()[-1].json
    assert sent["stream"] is True and sent["partial_images"] == 2


def test_a_provider_that_does_not_stream_sends_the_completed_event(
    openai_stack: tuple[GatewayProcess, FakeProvider],
) -> None:
    gateway, fake = openai_stack
    response = gateway.generate(
        {"model": "openai/dall-e-3", "prompt": "a harbour", "stream": True, "partial_images": 2}
    )
    events = sse_events(response)
    assert [name for name, _ in events] == [COMPLETED]
    assert decode_png(base64.b64decode(events[0][1]["b64_json"]))
    assert "stream" not in fake.generation_requests()[-1].json


def test_a_refusal_in_an_openai_stream_is_the_usual_envelope(
    openai_stack: tuple[GatewayProcess, FakeProvider],
) -> None:
    gateway, _ = openai_stack
    response = gateway.generate(
        {"model": "openai/gpt-image-1", "prompt": "BLOCKME", "stream": True, "partial_images": 1}
    )
    assert_error(response, 400, "CONTENT_POLICY_VIOLATION")


# --- edits: `stream: true` on POST /v1/images/edits, events named image_edit.*

EDIT_PARTIAL = "image_edit.partial_image"
EDIT_COMPLETED = "image_edit.completed"


def input_png(color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(out, format="PNG")
    return out.getvalue()


def edit_fields(**fields: Any) -> dict[str, Any]:
    return {"model": "local/canvas", "prompt": "a red sun, streamed", "size": "256x256", **fields}


def post_edit(
    gateway: GatewayProcess, key: str, fields: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST /v1/images/edits as a multipart form, as the SDKs send it."""
    return httpx.post(
        f"{gateway.http_url}/v1/images/edits",
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        data={
            name: str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in fields.items()
        },
        files=[("image", ("a.png", input_png(), "image/png"))],
        timeout=60,
    )


def test_python_sdk_streams_an_edit(gateway: GatewayProcess) -> None:
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    stream = client.images.edit(
        image=("a.png", input_png(), "image/png"), stream=True, partial_images=2, **edit_fields()
    )
    events = list(stream)
    assert [event.type for event in events] == [EDIT_PARTIAL, EDIT_PARTIAL, EDIT_COMPLETED]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    pictures = [base64.b64decode(event.b64_json) for event in events]
    assert all(decode_png(picture).size == (256, 256) for picture in pictures) and len(set(pictures)) == 3
    assert events[2].usage.input_tokens > 0
    # The completed image is the edit the same request makes unstreamed.
    plain = client.images.edit(image=("a.png", input_png(), "image/png"), **edit_fields())
    assert plain.data is not None and base64.b64decode(plain.data[0].b64_json or "") == pictures[2]


def test_async_python_sdk_streams_an_edit(gateway: GatewayProcess) -> None:
    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.http_url}/v1", api_key=gateway.key, max_retries=0, timeout=60
        ) as client:
            stream = await client.images.edit(
                image=("a.png", input_png(), "image/png"), stream=True, partial_images=1, **edit_fields()
            )
            return [event async for event in stream]

    events = asyncio.run(run())
    assert [event.type for event in events] == [EDIT_PARTIAL, EDIT_COMPLETED]


def test_edit_events_validate_against_the_official_schema(
    gateway: GatewayProcess, openai_schema: dict[str, object]
) -> None:
    response = post_edit(gateway, gateway.key, edit_fields(stream=True, partial_images=1))
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    events = sse_events(response)
    assert [name for name, _ in events] == [EDIT_PARTIAL, EDIT_COMPLETED]
    for name, data in events:
        assert data["type"] == name
        validate(data, openai_schema, "ImageEditStreamEvent")
    validate(events[0][1], openai_schema, "ImageEditPartialImageEvent")
    validate(events[1][1], openai_schema, "ImageEditCompletedEvent")
    # Errors before the first event are the usual envelope.
    assert_error(post_edit(gateway, gateway.key, edit_fields(stream=True, model="nope/x")), 404,
                 "MODEL_NOT_FOUND", "model")  # fmt: skip


def test_grpc_callers_stream_edits(grpc_stub: pb_grpc.ImageGenerationStub, gateway: GatewayProcess) -> None:
    request = pb.EditImagesRequest(
        model="local/canvas", prompt="grpc edit", size="256x256", partial_images=2,
        images=[pb.InputImage(data=input_png())],
    )  # fmt: skip
    metadata = (("authorization", f"Bearer {gateway.key}"),)
    events = list(grpc_stub.EditImagesStream(request, metadata=metadata, timeout=30))
    assert [event.type for event in events] == [EDIT_PARTIAL, EDIT_PARTIAL, EDIT_COMPLETED]
    assert decode_png(events[2].b64_json).size == (256, 256)


def test_a_streamed_edit_replays_as_a_stream_and_a_caller_that_leaves_is_charged_once(
    gateway: GatewayProcess,
) -> None:
    name, key = new_project(gateway)
    body = edit_fields(stream=True, partial_images=2, prompt="replayed edit")
    first = post_edit(gateway, key, body, {"Idempotency-Key": "edit-stream-1"})
    again = post_edit(gateway, key, body, {"Idempotency-Key": "edit-stream-1"})
    assert [event for event, _ in sse_events(first)] == [EDIT_PARTIAL, EDIT_PARTIAL, EDIT_COMPLETED]
    assert again.headers["x-mg-idempotent-replay"] == "true"
    assert sse_events(again) == sse_events(first)[2:]
    # A caller that hangs up after the first partial image: the edit completes and is charged once,
    # and a retry with its key gets it.
    slow = edit_fields(stream=True, partial_images=2, prompt="left mid-edit",
                       providerOptions=json.dumps({"local": {"delay_ms": 1500}}))  # fmt: skip
    with httpx.stream(
        "POST",
        f"{gateway.http_url}/v1/images/edits",
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "edit-stream-2"},
        data=slow,
        files=[("image", ("a.png", input_png(), "image/png"))],
        timeout=30,
    ) as response:
        assert response.status_code == 200
        first_event = next(line for line in response.iter_lines() if line.startswith("event: "))
    assert first_event == f"event: {EDIT_PARTIAL}"
    retry = post_edit(gateway, key, slow, {"Idempotency-Key": "edit-stream-2"})
    assert [event for event, _ in sse_events(retry)] == [EDIT_COMPLETED]
    assert settled(gateway, name) == [(2, 2, 4000)]  # local/canvas: $0.002 an image


def test_openai_edit_partial_images_are_streamed_through(
    openai_stack: tuple[GatewayProcess, FakeProvider],
) -> None:
    gateway, fake = openai_stack
    client = openai_client(f"{gateway.http_url}/v1", gateway.key)
    started = time.monotonic()
    arrivals = []
    stream = client.images.edit(
        model="openai/gpt-image-1",
        image=[("a.png", input_png(), "image/png"), ("b.png", input_png((0, 90, 200)), "image/png")],
        prompt="SLOWSTREAM a harbour at night",
        stream=True,
        partial_images=2,
        quality="low",
    )
    for event in stream:
        arrivals.append((event, time.monotonic() - started))
    events = [event for event, _ in arrivals]
    assert [event.type for event in events] == [EDIT_PARTIAL, EDIT_PARTIAL, EDIT_COMPLETED]
    assert arrivals[2][1] - arrivals[1][1] > 0.3  # each event reached the caller as the provider sent it
    assert events[2].usage.input_tokens_details.image_tokens == 2 * 194  # type: ignore[union-attr]
    sent = [r for r in fake.requests if r.path == "/v1/images/edits"][-1]
    assert (sent.form["stream"], sent.form["partial_images"]) == ("true", "2")


def test_an_edit_on_a_model_that_does_not_stream_sends_the_completed_event(
    openai_stack: tuple[GatewayProcess, FakeProvider],
) -> None:
    gateway, fake = openai_stack
    square = io.BytesIO()
    Image.new("RGBA", (256, 256), (10, 20, 30, 0)).save(square, format="PNG")
    response = httpx.post(
        f"{gateway.http_url}/v1/images/edits",
        headers={"Authorization": f"Bearer {gateway.key}"},
        data={
            "model": "openai/dall-e-2",
            "prompt": "a harbour",
            "size": "256x256",
            "stream": "true",
            "partial_images": "2",
        },
        files=[("image", ("a.png", square.getvalue(), "image/png"))],
        timeout=30,
    )
    assert [name for name, _ in sse_events(response)] == [EDIT_COMPLETED]
    sent = [r for r in fake.requests if r.path == "/v1/images/edits"][-1]
    assert "stream" not in sent.form
