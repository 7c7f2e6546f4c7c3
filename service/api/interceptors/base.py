"""A server interceptor that wraps the methods of the mg API with one concern's `around`.

Unary methods, and server-streaming ones written in grpc.aio's reader/writer style: a coroutine that
writes its messages through the context (service/api/events.py) and returns the call's result
message, so every concern sees one awaitable call with one result, streamed or not."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Self, cast

import grpc

MG_API_PREFIX = "/mg.v1."
# The admin API's calls: its own credential (the admin token), no project key, no rate limit.
ADMIN_PREFIX = "/mg.v1.Admin/"
# The streamed calls: their messages are events written by service/api/events.py.
STREAMED = frozenset(
    {
        "/mg.v1.ImageGeneration/GenerateImagesStream",
        "/mg.v1.ImageGeneration/GenerateImagesJson",
        "/mg.v1.ImageGeneration/EditImagesStream",
        "/mg.v1.ImageGeneration/EditImagesHttp",
    }
)
# The calls that make images: GenerateImages, EditImages and CreateImageVariations (gRPC) and their
# REST bindings (one call each, two encodings), and the streamed gRPC methods.
GENERATE_ONLY = frozenset(
    {
        *(
            f"/mg.v1.ImageGeneration/{name}{binding}"
            for name in ("GenerateImages", "EditImages", "CreateImageVariations")
            for binding in ("", "Json" if name == "GenerateImages" else "Http")
        ),
        *STREAMED,
    }
)


def is_admin_method(method: str) -> bool:
    return method.startswith(ADMIN_PREFIX)


Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses implement `around`; other services (health checking) pass through untouched."""

    # The calls this concern applies to: exactly `only_methods` when set, else every mg API method
    # but `except_methods`.
    only_methods: ClassVar[frozenset[str] | None] = None
    except_methods: ClassVar[frozenset[str]] = frozenset()
    # The image API's own concerns (project keys, their rate limits) skip the admin API's calls,
    # which have a credential of their own (admin_auth.py).
    image_api_only: ClassVar[bool] = False
    # method -> (the handler below, the handler wrapping it)
    _wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:  # so subclasses need not call super().__init__
        instance = super().__new__(cls)
        instance._wrapped = {}
        return instance

    def applies_to(self, method: str) -> bool:
        if self.only_methods is not None:
            return method in self.only_methods
        if self.image_api_only and is_admin_method(method):
            return False
        return method.startswith(MG_API_PREFIX) and method not in self.except_methods

    async def around(
        self, behavior: Behavior, request: Any, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> Any:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.applies_to(method):
            return handler
        if handler.unary_unary is None and not inspect.iscoroutinefunction(handler.unary_stream):
            return handler
        # grpc.aio runs this for every call; the handler below it is the same object each time (the
        # registered one, or the one the next interceptor made), so the wrapped handler is made once.
        made = self._wrapped.get(method)
        if made is None or made[0] is not handler:
            made = (handler, self._wrap(handler, method))
            self._wrapped[method] = made
        return made[1]

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        # grpc.aio hands coroutine behaviors to interceptors; the stubs type them as sync.
        behavior = cast(Behavior, handler.unary_unary or handler.unary_stream)
        # `around` itself with its arguments bound, rather than a coroutine that awaits it: every
        # call in flight holds one coroutine frame fewer per concern. (grpc.aio tells a coroutine
        # behavior from a sync one, which it would run in a thread, by
        # inspect.iscoroutinefunction(), which sees through a partial.)
        wrapped = functools.partial(self.around, behavior, method=method)

        # (a coroutine as a unary_stream behavior is grpc.aio's reader/writer style: its return
        # value is not sent; the messages are what it wrote)
        kind = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.unary_stream_rpc_method_handler
        )
        return kind(
            wrapped,
            request_deserializer=self.request_deserializer(handler),
            response_serializer=handler.response_serializer,
        )

    def request_deserializer(self, handler: grpc.RpcMethodHandler[Any, Any]) -> Callable[[bytes], Any] | None:
        """How the wrapped handler parses the request bytes: as the handler below it does."""
        return handler.request_deserializer
