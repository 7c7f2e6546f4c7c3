"""The interceptors that apply to every call (auth, rate limit, observe, error rendering), on a real
in-process grpc.aio server with a real SQLite store, called through a real channel."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from mg.v1 import image_generation_pb2 as pb
from prometheus_client import REGISTRY

from service import admin
from service.api.interceptors.auth import AuthInterceptor
from service.api.interceptors.error_rendering import ErrorRenderingInterceptor
from service.api.interceptors.observe import ObserveInterceptor
from service.api.interceptors.rate_limit import RateLimitInterceptor
from service.api.interceptors.request_context import RequestContextInterceptor, current_request
from service.catalog.catalog import load_catalog
from service.errors import BadRequest
from service.stores.sqlite import SqliteStore

SERVICE = "mg.v1.ImageGeneration"


@dataclass
class Served:
    channel: grpc.aio.Channel
    store: SqliteStore
    seen: list[str]  # the project each call that reached the servicer ran as

    async def call(
        self, key: str | None, model: str = "local/sketch"
    ) -> tuple[grpc.StatusCode, dict[str, str]]:
        method = self.channel.unary_unary(
            f"/{SERVICE}/ListModels",
            request_serializer=pb.GenerateImagesRequest.SerializeToString,
            response_deserializer=pb.ListModelsResponse.FromString,
        )
        metadata = (("authorization", f"Bearer {key}"),) if key is not None else ()
        call = method(pb.GenerateImagesRequest(model=model, prompt="x"), metadata=metadata)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            return error.code(), {k: str(v) for k, v in (error.trailing_metadata() or ())}
        return grpc.StatusCode.OK, {k: str(v) for k, v in (await call.initial_metadata() or ())}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    store = SqliteStore(tmp_path / "mg.sqlite3")
    seen: list[str] = []

    async def list_models(request: pb.GenerateImagesRequest, context: Any) -> pb.ListModelsResponse:
        if request.prompt == "fail":
            raise BadRequest("no", param="prompt")
        seen.append(current_request().require_principal().project.name)
        return pb.ListModelsResponse(object="list")

    server = grpc.aio.server(
        interceptors=[
            RequestContextInterceptor(max_duration_s=30),
            ErrorRenderingInterceptor(),
            ObserveInterceptor(log_prompts=False, catalog=load_catalog()),
            AuthInterceptor(store),
            RateLimitInterceptor(store, default_rpm=1000),
        ]
    )
    handler = grpc.unary_unary_rpc_method_handler(
        list_models,
        request_deserializer=pb.GenerateImagesRequest.FromString,
        response_serializer=pb.ListModelsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ListModels": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(channel, store, seen)
    await server.stop(None)
    await store.close()


async def new_key(store: SqliteStore, project: str, rpm: int | None = None) -> str:
    await admin.create_project(store, project, None, [], rpm, actor="test")
    key, _ = await admin.create_key(store, project, actor="test")
    return key


@pytest.mark.parametrize("key", [None, "", "sk-not-ours", "mg_live_" + "A" * 43])
async def test_calls_without_a_valid_key_never_reach_the_servicer(served: Served, key: str | None) -> None:
    code, trailers = await served.call(key)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert '"code":"UNAUTHENTICATED"' in trailers["x-mg-error"] and trailers["x-http-status"] == "401"
    assert served.seen == []


async def test_a_revoked_key_is_refused_at_once(served: Served) -> None:
    key = await new_key(served.store, "acme")
    assert (await served.call(key))[0] == grpc.StatusCode.OK
    (record,) = await served.store.list_keys()
    await served.store.revoke_key(record.id, at=1.0)
    code, trailers = await served.call(key)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in trailers["x-mg-error"]
    assert served.seen == ["acme"]


async def test_each_key_has_its_own_rate_limit_and_answers_carry_its_headers(served: Served) -> None:
    first, second = await new_key(served.store, "a", rpm=2), await new_key(served.store, "b", rpm=2)
    codes = [(await served.call(first))[0] for _ in range(2)]
    code, trailers = await served.call(first)
    assert codes == [grpc.StatusCode.OK] * 2 and code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers["x-http-status"] == "429" and int(trailers["retry-after"]) >= 1
    assert trailers["x-ratelimit-limit-requests"] == "2" and trailers["x-ratelimit-remaining-requests"] == "0"
    code, headers = await served.call(second)
    assert code == grpc.StatusCode.OK and headers["x-ratelimit-remaining-requests"] == "1"
    assert "x-request-id" in headers


def requests_total(**labels: str) -> float:
    return REGISTRY.get_sample_value("mg_requests_total", {"method": "ListModels", **labels}) or 0.0


async def test_observe_writes_one_line_per_call_and_labels_only_catalog_ids(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    key = await new_key(served.store, "obs")
    unknown_before = requests_total(model="unknown", provider="", project="", code="UNAUTHENTICATED")
    alias_free = requests_total(model="local/sketch", provider="local", project="obs", code="OK")
    with caplog.at_level(logging.INFO, logger="mg.request"):
        assert (await served.call(key, model="local/sketch"))[0] == grpc.StatusCode.OK
        assert (await served.call(None, model="x" * 5000))[0] == grpc.StatusCode.UNAUTHENTICATED
    lines = [r for r in caplog.records if r.name == "mg.request"]
    assert len(lines) == 2
    ok, refused = (getattr(r, "fields") for r in lines)  # noqa: B009
    assert (ok["model"], ok["provider"], ok["project"], ok["status"]) == ("local/sketch", "local", "obs", 200)
    assert (refused["model"], refused["status"], len(refused["requested_model"])) == ("unknown", 401, 100)
    assert requests_total(model="local/sketch", provider="local", project="obs", code="OK") == alias_free + 1
    assert (
        requests_total(model="unknown", provider="", project="", code="UNAUTHENTICATED") == unknown_before + 1
    )


async def test_domain_errors_are_rendered_with_their_envelope(served: Served) -> None:
    key = await new_key(served.store, "err")
    method = served.channel.unary_unary(
        f"/{SERVICE}/ListModels",
        request_serializer=pb.GenerateImagesRequest.SerializeToString,
        response_deserializer=pb.ListModelsResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(pb.GenerateImagesRequest(prompt="fail"), metadata=(("authorization", f"Bearer {key}"),))
    trailers = dict(caught.value.trailing_metadata() or ())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers["x-http-status"] == "400" and '"param":"prompt"' in str(trailers["x-mg-error"])
