"""UnaryInterceptor: wraps the mg API's unary handlers once per method, not once per call."""

from __future__ import annotations

from typing import Any, cast

import grpc

from service.api.interceptors.base import Behavior, UnaryInterceptor


class Tagging(UnaryInterceptor):
    async def around(self, behavior: Behavior, request: Any, context: Any, method: str) -> Any:
        return ("tagged", await behavior(request, context))


def details(method: str) -> grpc.HandlerCallDetails:
    return cast(grpc.HandlerCallDetails, Details(method))


class Details:
    def __init__(self, method: str) -> None:
        self.method = method


async def behavior(request: Any, context: Any) -> Any:
    return request


def handler() -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(behavior)


async def test_the_wrapped_handler_is_made_once_per_method_and_remade_when_the_one_below_changes() -> None:
    interceptor, below = Tagging(), handler()

    async def continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return below

    first = await interceptor.intercept_service(continuation, details("/mg.v1.ImageGeneration/ListModels"))
    again = await interceptor.intercept_service(continuation, details("/mg.v1.ImageGeneration/ListModels"))
    assert first is again and first is not below
    assert first is not None and await first.unary_unary("r", None) == ("tagged", "r")  # type: ignore[misc, arg-type]

    below = handler()
    remade = await interceptor.intercept_service(continuation, details("/mg.v1.ImageGeneration/ListModels"))
    assert remade is not first and remade is not below


async def test_methods_it_does_not_apply_to_pass_through_untouched() -> None:
    below = handler()

    async def continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return below

    passed = await Tagging().intercept_service(continuation, details("/grpc.health.v1.Health/Check"))
    assert passed is below


async def test_streamed_methods_written_through_the_context_are_wrapped_as_one_call() -> None:
    # a coroutine: reader/writer style
    below: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(behavior)

    async def continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return below

    wrapped = await Tagging().intercept_service(
        continuation, details("/mg.v1.ImageGeneration/GenerateImagesJson")
    )
    assert wrapped is not None and wrapped is not below and wrapped.unary_unary is None
    assert await wrapped.unary_stream("r", None) == ("tagged", "r")  # type: ignore[misc, arg-type]


async def test_async_generator_streams_pass_through_untouched() -> None:
    async def generator(request: Any, context: Any) -> Any:
        yield request

    below: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(generator)

    async def continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return below

    assert await Tagging().intercept_service(continuation, details("/mg.v1.ImageGeneration/X")) is below
